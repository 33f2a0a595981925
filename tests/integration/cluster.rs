//! Cluster mode and zero-downtime reload: unmodified Node workers sharing
//! one port (corral as their cluster primary), `listen` sockets for any
//! language, rolling `reload` / `graceful_reload` under a steady request
//! loop, a replacement that never gets ready, `scale`, https workers (the
//! TLS ticket keys), a worker's own `server.close()` and `disconnect()`,
//! and `-i` / `-x` / `instances: "max"`.
//!
//! Every app listens on 127.0.0.1 only, on a port picked by `free_port`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// An unmodified Node http server: it answers `pid N` and logs its
/// instance, when it listens, and how it exits (a SIGKILL logs nothing).
const NODE_HTTP: &str = "\
console.log('instance ' + process.env.NODE_APP_INSTANCE);
process.on('exit', (c) => console.log('exit ' + process.pid + ' ' + c));
require('http')
  .createServer((q, s) => s.end('pid ' + process.pid))
  .listen(+process.env.PORT, '127.0.0.1', () => console.log('listening ' + process.pid));
";

/// A Node http server in cluster mode that closes its server on `/close`
/// and leaves the cluster on `/disconnect`.
const NODE_CLOSE: &str = "\
const cluster = require('cluster');
process.on('exit', (c) => console.log('exit ' + process.pid + ' ' + c));
const server = require('http').createServer((q, s) => {
  if (q.url === '/close') {
    s.end('closing ' + process.pid);
    server.close();
  } else if (q.url === '/disconnect') {
    s.end('disconnecting ' + process.pid);
    cluster.worker.disconnect();
  } else {
    s.end('pid ' + process.pid);
  }
});
server.listen(+process.env.PORT, '127.0.0.1', () => console.log('listening ' + process.pid));
";

/// A Python server on the `listen` socket (fd 3): it checks the socket
/// activation env, then answers `pid N` until SIGINT/SIGTERM, finishing
/// the request in hand.
const PY_LISTEN: &str = r#"import os, signal, socket, sys

if os.environ.get("LISTEN_FDS") != "1" or os.environ.get("LISTEN_PID") != str(os.getpid()):
    print("listen bad", os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID"), os.getpid(), flush=True)
    sys.exit(3)
stop = False

def on_signal(*_):
    global stop
    stop = True

signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
sock = socket.socket(fileno=3)
sock.settimeout(0.05)
body = ("pid %d" % os.getpid()).encode()
print("listen ok %d" % os.getpid(), flush=True)
while not stop:
    try:
        conn, _ = sock.accept()
    except (socket.timeout, BlockingIOError, InterruptedError):
        continue
    with conn:
        conn.settimeout(2)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
print("exit %d" % os.getpid(), flush=True)
"#;

/// A Node https server: the key pair is in its cwd.
const NODE_HTTPS: &str = "\
const fs = require('fs');
const opts = { key: fs.readFileSync('key.pem'), cert: fs.readFileSync('cert.pem') };
process.on('exit', (c) => console.log('exit ' + process.pid + ' ' + c));
require('https')
  .createServer(opts, (q, s) => s.end('pid ' + process.pid))
  .listen(+process.env.PORT, '127.0.0.1', () => console.log('listening ' + process.pid));
";

/// A Node https client (no certificate check, 127.0.0.1 only): sequential
/// requests until argv[3] distinct pids answered, 500 requests or 10 s;
/// prints `{"pids":[…],"n":…,"errors":[…]}`.
const HTTPS_CLIENT: &str = "\
const https = require('https');
const port = +process.argv[2], want = +process.argv[3];
const seen = new Set(), errors = [];
const deadline = Date.now() + 10000;
let n = 0;
function one() {
  if (seen.size >= want || n >= 500 || Date.now() > deadline) {
    console.log(JSON.stringify({ pids: [...seen], n, errors }));
    return;
  }
  n++;
  let done = false;
  const next = (err) => { if (done) return; done = true; if (err) errors.push(err); one(); };
  const req = https.get({ host: '127.0.0.1', port, path: '/', agent: false,
                          rejectUnauthorized: false, timeout: 2000 }, (res) => {
    let b = '';
    res.on('data', (d) => (b += d));
    res.on('end', () => {
      const m = /^pid (\\d+)$/.exec(b);
      if (m) seen.add(+m[1]);
      next(m ? null : 'body ' + JSON.stringify(b));
    });
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => next(String(e)));
}
one();
";

/// A Node script that only stays up.
const NODE_IDLE: &str = "setInterval(() => {}, 60000);\n";

fn pm_id_of(d: &Value) -> u32 {
    d["pm_id"].as_u64().expect("a pm_id") as u32
}

/// The instance index (`NODE_APP_INSTANCE`) of a description.
fn index_of(d: &Value) -> u64 {
    env_of(d, "NODE_APP_INSTANCE")
        .as_u64()
        .unwrap_or_else(|| panic!("no NODE_APP_INSTANCE in {d}"))
}

fn pids(all: &[Value]) -> BTreeSet<i32> {
    all.iter().map(pid_of).collect()
}

fn pm_ids(all: &[Value]) -> Vec<u32> {
    let mut v: Vec<u32> = all.iter().map(pm_id_of).collect();
    v.sort();
    v
}

fn indexes(all: &[Value]) -> Vec<u64> {
    let mut v: Vec<u64> = all.iter().map(index_of).collect();
    v.sort();
    v
}

/// The stdout log of one instance of `name` (no `merge_logs`).
fn own_log(h: &TestHome, name: &str, pm_id: u32) -> String {
    read(&own_log_path(h, name, pm_id))
}

fn own_log_path(h: &TestHome, name: &str, pm_id: u32) -> std::path::PathBuf {
    h.home.join("logs").join(format!("{name}-out-{pm_id}.log"))
}

/// Wait until every process described in `all` logged `<word> <pid>` in
/// its own log.
fn wait_logged(h: &TestHome, name: &str, all: &[Value], word: &str) {
    for d in all {
        let (id, pid) = (pm_id_of(d), pid_of(d));
        wait_until(
            SOON,
            &format!("{name} {id} (pid {pid}) logs {word}"),
            || own_log(h, name, id).contains(&format!("{word} {pid}\n")),
        );
    }
}

/// Wait until app `name`'s instance `pm_id` logged `line` in its own log:
/// a process is gone once the daemon reaped it, which may be before it
/// relayed the process's last output in the same wake.
fn wait_log_line(h: &TestHome, name: &str, pm_id: u32, line: &str) {
    wait_until(SOON, &format!("{name} {pm_id} logs {line:?}"), || {
        own_log(h, name, pm_id).contains(line)
    });
}

/// The pid after `word ` in a body such as `closing 123`.
fn pid_after(body: &str, word: &str) -> i32 {
    body.strip_prefix(word)
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("expected `{word}<pid>`, got {body:?}"))
}

/// A Node cluster app of `instances` workers running `script` on `port`,
/// its descriptions once every worker listens.
fn node_cluster(h: &TestHome, name: &str, script: &str, port: u16, instances: u32) -> Vec<Value> {
    let started = h.start(json!({
        "name": name, "script": script, "instances": instances, "exec_mode": "cluster",
        "env": {"PORT": port.to_string()}, "kill_timeout": 8000,
    }));
    assert_eq!(started.len(), instances as usize, "{started:?}");
    let all = h.describe_all(json!(name));
    assert_eq!(all.len(), instances as usize, "{all:?}");
    wait_logged(h, name, &all, "listening");
    all
}

/// The description of pm_id `id` in `all`.
fn by_id(all: &[Value], id: u32) -> &Value {
    all.iter()
        .find(|d| pm_id_of(d) == id)
        .unwrap_or_else(|| panic!("no pm_id {id} in {all:?}"))
}

/// Every pid in `old` has ended within `limit` — well before the kill
/// timeout (8 s) would have SIGKILLed it.
fn wait_all_gone(old: &BTreeSet<i32>, limit: Duration, what: &str) {
    wait_until(limit, what, || old.iter().all(|p| !running(*p)));
}

#[test]
fn four_node_workers_share_one_port_with_logs_of_their_own() {
    let h = TestHome::started();
    h.script("web.js", NODE_HTTP);
    let port = free_port();
    let all = node_cluster(&h, "web", "web.js", port, 4);
    for d in &all {
        assert_eq!(env_of(d, "exec_mode"), "cluster_mode", "{d}");
        assert_eq!(env_of(d, "status"), "online", "{d}");
        let id = pm_id_of(d);
        let path = own_log_path(&h, "web", id);
        assert_eq!(
            env_of(d, "pm_out_log_path"),
            json!(path.display().to_string())
        );
    }
    assert_eq!(indexes(&all), vec![0, 1, 2, 3]);
    assert_eq!(pids(&all).len(), 4, "four distinct pids: {all:?}");
    // Each worker has its own number (Node's NODE_UNIQUE_ID), though all
    // four were made in one batch.
    let unique: BTreeSet<String> = pids(&all)
        .iter()
        .map(|pid| {
            read(std::path::Path::new(&format!("/proc/{pid}/environ")))
                .split('\0')
                .find_map(|kv| kv.strip_prefix("NODE_UNIQUE_ID="))
                .unwrap_or_else(|| panic!("no NODE_UNIQUE_ID in worker {pid}"))
                .to_string()
        })
        .collect();
    assert_eq!(unique.len(), 4, "workers' numbers: {unique:?}");

    // One port, four workers answering.
    let (seen, failures) = pids_answering(port, 4, 2000, SOON);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen, pids(&all), "the pids that answered");

    // Each instance logged its own index, once, in its own file.
    for d in &all {
        let log = own_log(&h, "web", pm_id_of(d));
        assert_eq!(log.matches("instance ").count(), 1, "{log:?}");
        assert!(
            log.contains(&format!("instance {}\n", index_of(d))),
            "{log:?}"
        );
    }
    assert!(
        !h.log_path("web", "out").exists(),
        "no shared log without merge_logs"
    );

    // merge_logs: one file for every instance.
    let port2 = free_port();
    let merged = h.start(json!({
        "name": "merged", "script": "web.js", "instances": 2, "exec_mode": "cluster",
        "merge_logs": true, "env": {"PORT": port2.to_string()}, "kill_timeout": 8000,
    }));
    assert_eq!(merged.len(), 2);
    let shared = h.log_path("merged", "out");
    for d in &merged {
        assert_eq!(
            env_of(d, "pm_out_log_path"),
            json!(shared.display().to_string())
        );
        let pid = pid_of(d);
        h.wait_log("merged", &format!("listening {pid}\n"));
        assert!(!own_log_path(&h, "merged", pm_id_of(d)).exists());
    }
    let log = h.out_log("merged");
    assert_eq!(log.matches("instance 0\n").count(), 1, "{log:?}");
    assert_eq!(log.matches("instance 1\n").count(), 1, "{log:?}");
    let (seen, failures) = pids_answering(port2, 2, 2000, SOON);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen, pids(&merged));
}

#[test]
fn a_rolling_reload_of_node_workers_drops_no_request() {
    let h = TestHome::started();
    h.script("web.js", NODE_HTTP);
    let port = free_port();
    let before = node_cluster(&h, "web", "web.js", port, 4);
    let old = pids(&before);

    // `corral reload` under a steady request loop.
    let load = Load::start(port);
    load.wait_more(3, "requests succeed before the reload");
    let out = h.corral(&["reload", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = h.describe_all(json!("web"));
    assert_eq!(after.len(), 4);
    load.wait_answer_from(&pids(&after), "a new worker answers the loop");
    let report = load.stop();
    report.assert_clean("the reload");
    assert!(
        report.pids.iter().any(|p| old.contains(p)),
        "the loop ran before the reload: {report:?}"
    );
    for d in &after {
        let id = pm_id_of(d);
        let was = by_id(&before, id);
        assert_ne!(pid_of(d), pid_of(was), "pm_id {id} was not replaced");
        assert!(!old.contains(&pid_of(d)), "pm_id {id} has an old pid");
        assert_eq!(env_of(d, "restart_time"), json!(1), "{d}");
        assert_eq!(env_of(d, "status"), "online", "{d}");
        assert_eq!(index_of(d), index_of(was), "pm_id {id} kept its index");
    }
    // The answer listed the four instances with their new pids.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" web ") && l.contains("online"))
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    for d in &after {
        assert!(
            stdout.contains(&format!(" {} ", pid_of(d))),
            "new pid {} not in {stdout}",
            pid_of(d)
        );
    }
    // The old workers drained (cluster disconnect) and exited 0 on their
    // own, long before their 8 s kill timeout.
    wait_all_gone(&old, Duration::from_secs(4), "the old workers have exited");
    for d in &before {
        let (id, pid) = (pm_id_of(d), pid_of(d));
        wait_log_line(&h, "web", id, &format!("exit {pid} 0\n"));
    }
    wait_logged(&h, "web", &after, "listening");

    // graceful_reload over the raw socket.
    let load = Load::start(port);
    load.wait_more(3, "requests succeed before the graceful reload");
    let r = h.ok(json!({"cmd": "graceful_reload", "target": "web"}));
    let answered = r.as_array().expect("graceful_reload answers an array");
    load.wait_answer_from(&pids(answered), "a new worker answers the loop");
    let report = load.stop();
    report.assert_clean("graceful_reload");
    assert!(
        report.pids.iter().any(|p| pids(&after).contains(p)),
        "the loop ran before graceful_reload: {report:?}"
    );
    assert_eq!(pm_ids(answered), vec![0, 1, 2, 3], "{r}");
    let middle = pids(&after);
    for d in answered {
        assert_eq!(env_of(d, "restart_time"), json!(2), "{d}");
        assert!(!middle.contains(&pid_of(d)), "not replaced: {d}");
        assert!(!old.contains(&pid_of(d)), "an old pid again: {d}");
    }
    wait_all_gone(
        &middle,
        Duration::from_secs(4),
        "the drained workers have exited",
    );
    for d in &after {
        let (id, pid) = (pm_id_of(d), pid_of(d));
        wait_log_line(&h, "web", id, &format!("exit {pid} 0\n"));
    }
}

/// A Python app of 2 instances on a `listen` socket of 127.0.0.1:`port`,
/// with `extra` options; its descriptions once both accept.
fn py_listen(h: &TestHome, name: &str, port: u16, extra: Value) -> Vec<Value> {
    h.script("serve.py", PY_LISTEN);
    let mut app = json!({
        "name": name, "script": "serve.py", "instances": 2,
        "listen": [format!("127.0.0.1:{port}")], "kill_timeout": 8000,
    });
    for (k, v) in extra.as_object().expect("options") {
        app[k] = v.clone();
    }
    let started = h.start(app);
    assert_eq!(started.len(), 2, "{started:?}");
    let all = h.describe_all(json!(name));
    for d in &all {
        assert_eq!(env_of(d, "exec_interpreter"), "python3", "{d}");
        assert_eq!(env_of(d, "exec_mode"), "fork_mode", "{d}");
    }
    wait_logged(h, name, &all, "listen ok");
    all
}

#[test]
fn a_rolling_reload_of_a_listen_app_drops_no_request() {
    let h = TestHome::started();
    let port = free_port();
    let before = py_listen(&h, "py", port, json!({"min_uptime": 300}));
    let old = pids(&before);
    let (seen, failures) = pids_answering(port, 2, 2000, SOON);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen, old, "both instances accept on the one socket");

    let load = Load::start(port);
    load.wait_more(3, "requests succeed before the reload");
    let r = h.ok(json!({"cmd": "reload", "target": "py"}));
    let answered = r.as_array().expect("reload answers an array");
    load.wait_answer_from(&pids(answered), "a new instance answers the loop");
    let report = load.stop();
    report.assert_clean("the reload");
    assert!(
        report.pids.iter().any(|p| old.contains(p)),
        "the loop ran before the reload: {report:?}"
    );
    assert_eq!(pm_ids(answered), vec![0, 1], "{r}");
    let after = h.describe_all(json!("py"));
    for d in &after {
        let id = pm_id_of(d);
        assert_eq!(env_of(d, "restart_time"), json!(1), "{d}");
        assert!(
            !old.contains(&pid_of(d)),
            "pm_id {id} was not replaced: {d}"
        );
    }
    // The replacements got the socket with LISTEN_PID = their own pid
    // (without a ready signal, a replacement counts as ready once it ran
    // min_uptime, so it may still be starting: the backlog waits for it).
    wait_logged(&h, "py", &after, "listen ok");
    for d in &after {
        let log = own_log(&h, "py", pm_id_of(d));
        assert!(!log.contains("listen bad"), "{log:?}");
    }
    // The old ones finished their request in hand and left on SIGINT.
    wait_all_gone(
        &old,
        Duration::from_secs(4),
        "the old instances have exited",
    );
    for d in &before {
        wait_log_line(&h, "py", pm_id_of(d), &format!("exit {}\n", pid_of(d)));
    }
    let (seen, failures) = pids_answering(port, 2, 2000, SOON);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen, pids(&after));
}

/// The pids of `reload: replacement pid N` lines of the daemon log.
fn replacement_pids(log: &str) -> Vec<i32> {
    log.lines()
        .filter_map(|l| l.split("reload: replacement pid ").nth(1))
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

#[test]
fn a_replacement_that_never_gets_ready_leaves_the_old_processes_serving() {
    let h = TestHome::started();
    let port = free_port();
    // The app never says it is ready: it goes online at listen_timeout.
    let extra = json!({"wait_ready": true, "listen_timeout": 600});
    py_listen(&h, "stuck", port, extra);
    wait_until(SOON, "both instances are online", || {
        let all = h.describe_all(json!("stuck"));
        all.len() == 2 && all.iter().all(|d| env_of(d, "status") == "online")
    });
    let before = h.describe_all(json!("stuck"));
    let old = pids(&before);

    // One reload under way (its answer read later) ...
    let mut first = h.connect();
    first.send(b"{\"id\":\"first\",\"cmd\":\"reload\",\"target\":\"stuck\"}\n");
    wait_until(SOON, "the reload started a replacement", || {
        !replacement_pids(&h.daemon_log()).is_empty()
    });
    // ... refuses a second one.
    let second = h.request(json!({"cmd": "reload", "target": "stuck"}));
    assert_eq!(second["ok"], json!(false), "{second}");
    let msg = second["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("already running"), "{second}");

    // The first fails at listen_timeout, and says who keeps serving.
    let answer = first.read_response();
    assert_eq!(answer["id"], json!("first"), "{answer}");
    assert_eq!(answer["ok"], json!(false), "{answer}");
    let msg = answer["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("the old process keeps serving"), "{answer}");
    assert!(msg.contains("listen_timeout"), "{answer}");

    // The replacement is gone; the old processes are untouched and serve.
    let log = h.daemon_log();
    let replacements = replacement_pids(&log);
    assert_eq!(replacements.len(), 1, "one replacement tried: {log}");
    for p in &replacements {
        assert!(!old.contains(p));
        wait_gone(*p, "the replacement that never got ready");
    }
    let after = h.describe_all(json!("stuck"));
    assert_eq!(pids(&after), old, "{after:?}");
    for d in &after {
        assert_eq!(env_of(d, "status"), "online", "{d}");
        assert_eq!(env_of(d, "restart_time"), json!(0), "{d}");
    }
    let (seen, failures) = pids_answering(port, 2, 2000, SOON);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen, old, "only the old processes answer");
}

#[test]
fn scale_down_and_up_uses_fresh_pm_ids_and_the_lowest_free_indexes() {
    let h = TestHome::started();
    let started = h.start(json!({
        "name": "sc", "script": "sleep", "args": ["1000"], "instances": 4, "kill_timeout": 300,
    }));
    assert_eq!(pm_ids(&started), vec![0, 1, 2, 3]);
    assert_eq!(indexes(&started), vec![0, 1, 2, 3]);

    let out = h.corral(&["scale", "sc", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let two = h.describe_all(json!("sc"));
    assert_eq!(pm_ids(&two), vec![0, 1], "{two:?}");
    assert_eq!(indexes(&two), vec![0, 1]);
    for d in &started {
        let id = pm_id_of(d);
        if id >= 2 {
            wait_gone(pid_of(d), &format!("the removed instance {id}"));
        } else {
            assert_eq!(pid_of(by_id(&two, id)), pid_of(d), "pm_id {id} untouched");
        }
    }

    let out = h.corral(&["scale", "sc", "6"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let six = h.describe_all(json!("sc"));
    assert_eq!(
        pm_ids(&six),
        vec![0, 1, 4, 5, 6, 7],
        "pm_ids are never reused"
    );
    assert_eq!(indexes(&six), vec![0, 1, 2, 3, 4, 5]);
    for d in &six {
        assert_eq!(env_of(d, "status"), "online", "{d}");
        assert!(running(pid_of(d)), "{d}");
    }
    assert_eq!(pids(&six).len(), 6);

    let r = h.ok(json!({"cmd": "scale", "target": "sc", "instances": "+1"}));
    let seven = r.as_array().expect("scale answers an array");
    assert_eq!(pm_ids(seven), vec![0, 1, 4, 5, 6, 7, 8], "{r}");
    let new = by_id(seven, 8);
    assert_eq!(index_of(new), 6, "{new}");
    assert!(running(pid_of(new)));
    assert_eq!(h.describe_all(json!("sc")).len(), 7);
}

#[test]
fn https_workers_share_the_ticket_keys_and_serve() {
    let h = TestHome::started();
    let mut ssl = Command::new("openssl");
    ssl.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
    ])
    .current_dir(&h.work);
    let out = run(ssl);
    assert_eq!(out.status.code(), Some(0), "openssl: {}", text(&out));
    h.script("tls.js", NODE_HTTPS);
    h.script("client.js", HTTPS_CLIENT);
    let port = free_port();
    let all = node_cluster(&h, "tls", "tls.js", port, 2);

    let mut client = Command::new("node");
    client
        .args(["client.js", &port.to_string(), "2"])
        .current_dir(&h.work);
    let out = run(client);
    assert_eq!(out.status.code(), Some(0), "client: {}", text(&out));
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {}", text(&out)));
    assert_eq!(seen["errors"], json!([]), "{seen}");
    let served: BTreeSet<i32> = seen["pids"]
        .as_array()
        .expect("pids")
        .iter()
        .map(|p| p.as_i64().expect("a pid") as i32)
        .collect();
    assert_eq!(served, pids(&all), "both https workers serve: {seen}");
    // Neither worker crashed on its queryServer answer.
    for d in h.describe_all(json!("tls")) {
        assert_eq!(env_of(&d, "restart_time"), json!(0), "{d}");
        assert_eq!(env_of(&d, "status"), "online", "{d}");
        let err = read(
            &h.home
                .join("logs")
                .join(format!("tls-error-{}.log", pm_id_of(&d))),
        );
        assert!(!err.contains("Error"), "{err}");
    }
}

#[test]
fn the_port_stays_open_until_every_worker_closed_its_server() {
    let h = TestHome::started();
    h.script("close.js", NODE_CLOSE);
    let port = free_port();
    let all = node_cluster(&h, "cl", "close.js", port, 2);
    let both = pids(&all);

    let body = http_get(port, "/close", REQUEST_PATIENCE).expect("the first /close");
    let first = pid_after(&body, "closing ");
    assert!(both.contains(&first), "{body} from {both:?}");
    let other = *both.iter().find(|p| **p != first).expect("another worker");

    // Only the other worker serves now, and nothing is refused.
    let (seen, failures) = pids_answering(port, 2, 30, SOON);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen, BTreeSet::from([other]));

    let body = http_get(port, "/close", REQUEST_PATIENCE).expect("the second /close");
    assert_eq!(pid_after(&body, "closing "), other, "{body}");
    wait_until(SOON, "the port refuses connections", || refused(port));

    // Both workers are still there: only their servers closed.
    for d in h.describe_all(json!("cl")) {
        assert!(running(pid_of(&d)), "{d}");
        assert!(both.contains(&pid_of(&d)), "{d}");
        assert_eq!(env_of(&d, "status"), "online", "{d}");
        assert_eq!(env_of(&d, "restart_time"), json!(0), "{d}");
    }
}

#[test]
fn a_worker_that_disconnects_exits_and_is_restarted() {
    let h = TestHome::started();
    h.script("close.js", NODE_CLOSE);
    let port = free_port();
    let before = node_cluster(&h, "dc", "close.js", port, 2);

    let load = Load::start(port);
    load.wait_more(3, "requests succeed before the disconnect");
    let t0 = Instant::now();
    let body = http_get(port, "/disconnect", REQUEST_PATIENCE).expect("/disconnect");
    let gone = pid_after(&body, "disconnecting ");
    let was = before
        .iter()
        .find(|d| pid_of(d) == gone)
        .unwrap_or_else(|| panic!("{body} is not from {before:?}"));
    let id = pm_id_of(was);
    wait_gone(gone, "the worker that disconnected");
    let exited_in = t0.elapsed();
    assert!(
        exited_in < Duration::from_secs(4),
        "it took {exited_in:?}: killed, not exited"
    );
    wait_log_line(&h, "dc", id, &format!("exit {gone} 0\n"));

    // autorestart brings it back.
    wait_until(SOON, "the worker is restarted", || {
        let d = h.describe_all(json!(id));
        d.len() == 1
            && env_of(&d[0], "status") == "online"
            && env_of(&d[0], "restart_time") == json!(1)
            && pid_of(&d[0]) != gone
    });
    let d = h.describe_all(json!(id)).remove(0);
    assert_eq!(env_of(&d, "exit_code"), json!(0), "{d}");
    wait_logged(&h, "dc", std::slice::from_ref(&d), "listening");
    load.wait_more(5, "requests succeed after the restart");
    let report = load.stop();
    report.assert_clean("the disconnect");
    let (seen, failures) = pids_answering(port, 2, 2000, SOON);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(seen, pids(&h.describe_all(json!("dc"))));
}

#[test]
fn cli_instances_imply_cluster_mode_and_max_is_one_per_cpu() {
    let h = TestHome::started();
    h.script("idle.js", NODE_IDLE);

    let out = h.corral(&["start", "idle.js", "-i", "2", "--name", "clu"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let clu = h.describe_all(json!("clu"));
    assert_eq!(clu.len(), 2, "{clu:?}");
    assert_eq!(indexes(&clu), vec![0, 1]);
    for d in &clu {
        assert_eq!(env_of(d, "exec_mode"), "cluster_mode", "{d}");
        assert_eq!(env_of(d, "instances"), json!(2), "{d}");
    }

    let out = h.corral(&["start", "idle.js", "-i", "2", "-x", "--name", "frk"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let frk = h.describe_all(json!("frk"));
    assert_eq!(frk.len(), 2, "{frk:?}");
    for d in &frk {
        assert_eq!(env_of(d, "exec_mode"), "fork_mode", "{d}");
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let many = h.start(json!({
        "name": "many", "script": "sleep", "args": ["1000"], "instances": "max",
        "kill_timeout": 300,
    }));
    assert_eq!(many.len(), cpus, "{many:?}");
    let want: Vec<u64> = (0..cpus as u64).collect();
    assert_eq!(indexes(&many), want);
    assert_eq!(h.describe_all(json!("many")).len(), cpus);
}

#[test]
fn a_reload_kills_what_is_left_of_the_old_process_group() {
    let h = TestHome::started();
    let port = free_port();
    // A child that ignores the kill signal outlives the old main process:
    // the drain must wait for it and SIGKILL it at the kill timeout.
    h.script(
        "stubborn.sh",
        "sh -c 'trap \"\" INT TERM; exec sleep 1000' &\necho \"child=$!\"\nwait\n",
    );
    h.start(
        json!({"name": "stub", "script": "stubborn.sh", "min_uptime": 200,
                   "kill_timeout": 300, "listen": format!("127.0.0.1:{port}")}),
    );
    let child = logged_pid(&h.wait_log("stub", "child="), "child");
    let r = h.ok(json!({"cmd": "reload", "target": "stub"}));
    assert_eq!(env_of(&r[0], "restart_time"), json!(1), "{r}");
    wait_until(SOON, "the old process's child is killed", || {
        !running(child)
    });
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(0));
}
