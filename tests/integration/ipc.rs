//! The IPC channel (Node's `process.send` / `process.on('message')`, and
//! the same JSON lines from Python and sh), readiness (`"ready"`,
//! `READY=1` on `NOTIFY_SOCKET`, `listen_timeout`), the `shutdown` message,
//! the event bus, and the log verbs (`logs`, `flush`, `reload-logs`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corral::Client;
use corral::client::Paths;
use corral::protocol::Event;
use serde_json::{Value, json};

use crate::util::*;

/// The pm_id in a description.
fn pm_id_of(desc: &Value) -> u32 {
    desc["pm_id"].as_u64().expect("a pm_id") as u32
}

/// The JSON after `prefix` on every line of `log` that starts with it.
fn logged_json(log: &str, prefix: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{j:?} is not JSON: {e}")))
        .collect()
}

/// The error code of a refused response.
fn error_code(resp: &Value) -> &str {
    assert_eq!(resp["ok"], json!(false), "expected a refusal: {resp}");
    resp["error"]["code"].as_str().unwrap_or("")
}

/// The next `Event::Message` of kind `kind` from a `Client` bus read on
/// another thread, within `SOON`.
fn next_message(
    rx: &mpsc::Receiver<Result<Event, corral::client::Error>>,
    kind: &str,
) -> (corral::protocol::ProcessRef, Value) {
    let deadline = Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(Event::Message {
                kind: k,
                process,
                data,
                ..
            })) if k == kind => return (process, data),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the bus failed: {e}"),
            Err(e) => panic!("no {kind} message on the bus within {SOON:?}: {e}"),
        }
    }
}

#[test]
fn a_node_app_gets_send_data_and_its_answer_reaches_the_bus() {
    let h = TestHome::started();
    h.script(
        "echo.js",
        "process.on('message', (m) => {\n\
         \x20 console.log('got ' + JSON.stringify(m));\n\
         \x20 process.send({type: 'process:msg', data: {success: true}});\n\
         });\n\
         console.log('up');\n",
    );
    let paths = Paths {
        home: h.home.clone(),
        socket: h.socket(),
        binary: bin(),
    };
    let mut client = Client::connect_with(&paths, false).expect("connect");
    let bus = client
        .launch_bus(Some(vec!["process:msg".into()]))
        .expect("launch the bus");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for ev in bus {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });

    let d = h.start(json!({"name": "echo", "script": "echo.js", "kill_timeout": 300}));
    assert_eq!(env_of(&d[0], "exec_interpreter"), "node", "{}", d[0]);
    assert_eq!(env_of(&d[0], "ipc"), json!(true));
    let (id, pid) = (pm_id_of(&d[0]), pid_of(&d[0]));
    h.wait_log("echo", "up\n");

    // The seed's packet, over the raw socket.
    let packet = json!({"id": id, "type": "process:msg", "topic": "t", "data": {"x": 1}});
    let r = h.send_data(packet.clone());
    assert_eq!(r["ok"], json!(true), "{r}");
    assert_eq!(r["result"], json!({"delivered": true}));
    let (process, data) = next_message(&rx, "process:msg");
    assert_eq!(data, json!({"success": true}));
    assert_eq!(process.pm_id, id);
    assert_eq!(process.name, "echo");
    assert_eq!(process.pid, pid);
    let log = h.wait_log("echo", "got ");
    assert_eq!(logged_json(&log, "got "), vec![packet.clone()], "{log:?}");

    // The same packet from the command line.
    let out = h.corral(&["msg", &id.to_string(), r#"{"x":1}"#, "--topic", "t"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (process, data) = next_message(&rx, "process:msg");
    assert_eq!(data, json!({"success": true}));
    assert_eq!(process.pm_id, id);
    wait_until(SOON, "the app logged the second message", || {
        logged_json(&h.out_log("echo"), "got ").len() == 2
    });
    assert_eq!(
        logged_json(&h.out_log("echo"), "got "),
        vec![packet.clone(), packet]
    );

    client.disconnect();
    reader.join().expect("the bus reader ends");
}

#[test]
fn python_and_sh_apps_speak_json_lines_on_the_channel() {
    let h = TestHome::started();
    h.script(
        "chan.py",
        "import os, socket, time\n\
         fd = int(os.environ['NODE_CHANNEL_FD'])\n\
         print('fd=%d' % fd)\n\
         ch = socket.socket(fileno=fd)\n\
         ch.sendall(b'{\"type\":\"custom:hi\",\"data\":{\"lang\":\"py\"}}\\n')\n\
         line = ch.makefile('rb').readline()\n\
         print('got ' + line.decode().rstrip('\\n'))\n\
         time.sleep(1000)\n",
    );
    h.script(
        "chan.sh",
        "echo \"fd=$NODE_CHANNEL_FD\"\n\
         echo '{\"type\":\"custom:hi\",\"data\":{\"lang\":\"sh\"}}' >&\"$NODE_CHANNEL_FD\"\n\
         read -r line <&\"$NODE_CHANNEL_FD\"\n\
         echo \"got $line\"\n\
         exec sleep 1000\n",
    );
    let mut sub = h.subscribe(Some(&["custom:*"]));
    let py = h.start(json!({"name": "py", "script": "chan.py", "kill_timeout": 300}));
    let sh = h.start(json!({"name": "sh", "script": "chan.sh", "kill_timeout": 300}));
    let mut langs = Vec::new();
    for _ in 0..2 {
        let ev = sub.wait_for("custom:hi", |e| e["event"] == "custom:hi");
        let lang = ev["data"]["data"]["lang"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // The event names the app that sent it.
        assert_eq!(
            ev["data"]["process"]["name"].as_str(),
            Some(lang.as_str()),
            "{ev}"
        );
        langs.push(lang);
    }
    langs.sort();
    assert_eq!(langs, ["py", "sh"]);
    assert!(h.out_log("py").contains("fd=3\n"), "{:?}", h.out_log("py"));
    assert!(h.out_log("sh").contains("fd=3\n"), "{:?}", h.out_log("sh"));

    for (name, d) in [("py", &py[0]), ("sh", &sh[0])] {
        let packet = json!({"id": pm_id_of(d), "type": "process:msg", "data": {"n": name}});
        let r = h.send_data(packet.clone());
        assert_eq!(r["result"], json!({"delivered": true}), "{r}");
        let log = h.wait_log(name, "got ");
        assert_eq!(logged_json(&log, "got "), vec![packet], "{name}: {log:?}");
    }
    // Unknown pm_id.
    assert_eq!(
        error_code(&h.send_data(json!({"id": 99, "type": "process:msg", "data": 1}))),
        "not_found"
    );
}

#[test]
fn an_app_that_closes_its_channel_keeps_running_without_one() {
    let h = TestHome::started();
    h.script(
        "close.sh",
        "eval \"exec $NODE_CHANNEL_FD>&-\"\necho closed\nexec sleep 1000\n",
    );
    let d = h.start(json!({"name": "close", "script": "close.sh", "kill_timeout": 300}));
    let (id, pid) = (pm_id_of(&d[0]), pid_of(&d[0]));
    h.wait_log("close", "closed\n");
    wait_until(SOON, "send_data to a closed channel is no_channel", || {
        let r = h.send_data(json!({"id": id, "type": "process:msg", "data": "x"}));
        r["ok"] == json!(false) && error_code(&r) == "no_channel"
    });
    // The daemon has seen the close: the app runs on, the same process.
    let d = h.describe("close");
    assert_eq!(env_of(&d, "status"), "online", "{d}");
    assert_eq!(pid_of(&d), pid);
    assert_eq!(env_of(&d, "restart_time"), json!(0));
    assert!(running(pid));
}

#[test]
fn without_ipc_an_app_has_no_channel() {
    let h = TestHome::started();
    h.script(
        "noipc.sh",
        "echo \"fd=${NODE_CHANNEL_FD:-none}\"\nexec sleep 1000\n",
    );
    let d = h.start(json!({"name": "noipc", "script": "noipc.sh", "ipc": false,
                           "kill_timeout": 300}));
    let (id, pid) = (pm_id_of(&d[0]), pid_of(&d[0]));
    assert_eq!(env_of(&d[0], "ipc"), json!(false));
    h.wait_log("noipc", "fd=none\n");
    wait_until(SOON, "noipc has exec'd sleep", || {
        read(Path::new(&format!("/proc/{pid}/comm"))).trim() == "sleep"
    });
    // Waited for, not read once: `comm` may name the new program a moment
    // before exec has closed the shell's close-on-exec fds. A channel
    // leaked into the app stays open and fails this.
    wait_until(SOON, "fd 3 is not open in an app without ipc", || {
        std::fs::read_link(format!("/proc/{pid}/fd/3")).is_err()
    });
    let r = h.send_data(json!({"id": id, "type": "process:msg", "data": "x"}));
    assert_eq!(error_code(&r), "no_channel", "{r}");
    // The command line reports the refusal.
    let out = h.corral(&["msg", &id.to_string(), "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// Start `app` on a thread; while its request waits, the app must be seen
/// `launching`. The answer and how long it took.
fn start_waiting(h: &TestHome, app: Value) -> (Value, Duration) {
    let name = app["name"].as_str().expect("a name").to_string();
    let req = json!({"cmd": "start", "app": h.with_cwd(app)});
    let socket = h.socket();
    let t0 = Instant::now();
    let starter = std::thread::spawn(move || {
        let answer = Conn::open(&socket).call(&req);
        (answer, t0.elapsed())
    });
    wait_until(SOON, &format!("{name} is launching"), || {
        let all = h.describe_all(json!(name));
        all.len() == 1 && all[0]["pm2_env"]["status"] == "launching"
    });
    let (answer, took) = starter.join().expect("the start request");
    assert_eq!(answer["ok"], json!(true), "{answer}");
    (answer["result"][0].clone(), took)
}

#[test]
fn wait_ready_answers_start_when_node_says_ready() {
    let h = TestHome::started();
    h.script(
        "ready.js",
        "setTimeout(() => process.send('ready'), 500);\nsetInterval(() => {}, 1000);\n",
    );
    let mut sub = h.subscribe(Some(&["process:event", "process:msg"]));
    let (d, took) = start_waiting(
        &h,
        json!({"name": "ready", "script": "ready.js", "wait_ready": true,
               "listen_timeout": 10000, "kill_timeout": 300}),
    );
    assert_eq!(env_of(&d, "status"), "online", "{d}");
    assert!(
        took >= Duration::from_millis(400),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    // The ready message is on the bus too, in whichever order.
    let (mut msg, mut online) = (None, None);
    sub.wait_for("process:msg ready and online", |e| {
        if e["event"] == "process:msg" {
            msg = Some(e.clone());
        }
        if is_process_event(e, "ready", "online") {
            online = Some(e.clone());
        }
        msg.is_some() && online.is_some()
    });
    let (msg, online) = (msg.unwrap_or_default(), online.unwrap_or_default());
    assert_eq!(msg["data"]["raw"], "ready", "{msg}");
    assert_eq!(msg["data"]["process"]["name"], "ready", "{msg}");
    assert!(online["data"].get("warning").is_none(), "{online}");
}

#[test]
fn wait_ready_with_ready_on_notify_socket_and_a_status() {
    let h = TestHome::started();
    h.script(
        "notify.py",
        "import os, socket, time\n\
         print('notifier=%d' % os.getpid(), flush=True)\n\
         time.sleep(0.5)\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1\\nSTATUS=serving', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)\n",
    );
    let (d, took) = start_waiting(
        &h,
        json!({"name": "sd", "script": "notify.py", "wait_ready": true,
               "listen_timeout": 10000, "kill_timeout": 300}),
    );
    assert_eq!(env_of(&d, "status"), "online", "{d}");
    assert!(
        took >= Duration::from_millis(400),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    wait_until(SOON, "sd has notify_status serving", || {
        env_of(&h.describe("sd"), "notify_status") == "serving"
    });
}

#[test]
fn ready_from_a_child_of_the_app_counts() {
    let h = TestHome::started();
    h.script(
        "notify.py",
        "import os, socket, time\n\
         print('notifier=%d' % os.getpid(), flush=True)\n\
         time.sleep(0.5)\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1\\nSTATUS=child', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)\n",
    );
    // bash runs python3 as a child (not exec'd: a command follows).
    h.script("parent.sh", "python3 notify.py\necho after\n");
    let (d, took) = start_waiting(
        &h,
        json!({"name": "parent", "script": "parent.sh", "wait_ready": true,
               "listen_timeout": 10000, "kill_timeout": 300}),
    );
    assert_eq!(env_of(&d, "status"), "online", "{d}");
    assert!(
        took >= Duration::from_millis(400),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(8), "answered after {took:?}");
    let notifier = logged_pid(&h.out_log("parent"), "notifier");
    assert_ne!(notifier, pid_of(&d), "the notifier is a child, not the app");
    wait_until(SOON, "parent has notify_status child", || {
        env_of(&h.describe("parent"), "notify_status") == "child"
    });
}

#[test]
fn listen_timeout_makes_a_silent_app_online_with_a_warning() {
    let h = TestHome::started();
    let mut sub = h.subscribe(Some(&["process:event"]));
    let (d, took) = start_waiting(
        &h,
        json!({"name": "silent", "script": "sleep", "args": ["1000"], "wait_ready": true,
               "listen_timeout": 600, "kill_timeout": 300}),
    );
    assert_eq!(env_of(&d, "status"), "online", "{d}");
    assert!(
        took >= Duration::from_millis(550),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    let online = sub.wait_for("online", |e| is_process_event(e, "silent", "online"));
    let warning = online["data"]["warning"].as_str().unwrap_or("");
    assert!(warning.contains("listen_timeout"), "{online}");
}

#[test]
fn shutdown_with_message_stops_an_app_that_listens() {
    let h = TestHome::started();
    h.script(
        "graceful.js",
        "process.on('message', (m) => {\n\
         \x20 if (m === 'shutdown') { console.log('bye'); process.exit(0); }\n\
         });\n\
         process.on('SIGINT', () => console.log('sigint ignored'));\n\
         console.log('up');\n",
    );
    let d = h.start(json!({"name": "graceful", "script": "graceful.js",
                           "shutdown_with_message": true, "kill_timeout": 5000}));
    let pid = pid_of(&d[0]);
    h.wait_log("graceful", "up\n");
    let t0 = Instant::now();
    let r = h.ok(json!({"cmd": "stop", "target": "graceful"}));
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    assert_eq!(env_of(&r[0], "status"), "stopped", "{}", r[0]);
    assert_eq!(env_of(&r[0], "exit_code"), json!(0), "{}", r[0]);
    assert!(
        h.out_log("graceful").contains("bye\n"),
        "{:?}",
        h.out_log("graceful")
    );
    assert!(!running(pid));
}

#[test]
fn shutdown_with_message_kills_an_app_that_ignores_it() {
    let h = TestHome::started();
    h.script(
        "deaf.js",
        "process.on('message', (m) => console.log('ignored ' + JSON.stringify(m)));\n\
         process.on('SIGINT', () => {});\n\
         console.log('up');\n",
    );
    let d = h.start(json!({"name": "deaf", "script": "deaf.js",
                           "shutdown_with_message": true, "kill_timeout": 500}));
    let pid = pid_of(&d[0]);
    h.wait_log("deaf", "up\n");
    let t0 = Instant::now();
    let r = h.ok(json!({"cmd": "stop", "target": "deaf"}));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(450), "stop took {took:?}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(env_of(&r[0], "exit_signal"), "SIGKILL", "{}", r[0]);
    assert!(
        h.out_log("deaf").contains("ignored \"shutdown\"\n"),
        "{:?}",
        h.out_log("deaf")
    );
    assert!(!running(pid));
}

#[test]
fn the_bus_tells_an_apps_life_and_the_daemons_end() {
    let h = TestHome::started();
    // Exits with code 7 when a message arrives on its channel.
    h.script("seq.sh", "echo up\nread -r line <&3\nexit 7\n");
    let mut sub = h.subscribe(Some(&["process:event", "daemon:kill"]));
    let d = h.start(json!({"name": "seq", "script": "seq.sh", "kill_timeout": 300}));
    let id = pm_id_of(&d[0]);
    sub.wait_for("online", |e| is_process_event(e, "seq", "online"));
    let r = h.ok(json!({"cmd": "restart", "target": "seq"}));
    assert_eq!(env_of(&r[0], "status"), "online", "{}", r[0]);
    sub.wait_for("online after restart", |e| {
        is_process_event(e, "seq", "online")
    });
    let r = h.send_data(json!({"id": id, "type": "process:msg", "data": "go"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    sub.wait_for("exit code 7", |e| is_process_event(e, "seq", "exit"));
    sub.wait_for("online after the crash", |e| {
        is_process_event(e, "seq", "online")
    });
    h.ok(json!({"cmd": "stop", "target": "seq"}));
    h.ok(json!({"cmd": "delete", "target": "seq"}));
    sub.wait_for("delete", |e| is_process_event(e, "seq", "delete"));
    let daemon = h.daemon_pid();
    let out = h.corral(&["kill"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    sub.wait_for("daemon:kill", |e| e["event"] == "daemon:kill");
    sub.wait_closed();
    wait_gone(daemon, "the daemon");

    let kinds: Vec<String> = sub
        .seen
        .iter()
        .filter(|e| e["event"] == "process:event")
        .map(|e| e["data"]["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        kinds,
        [
            "start", "online", // start
            "exit", "restart", "online", // restart
            "exit", "online", // crash, autorestart
            "exit", "stop",   // stop
            "delete", // delete
        ],
        "{:#?}",
        sub.seen
    );
    let exits: Vec<(Value, Value)> = sub
        .seen
        .iter()
        .filter(|e| is_process_event(e, "seq", "exit"))
        .map(|e| (e["data"]["code"].clone(), e["data"]["signal"].clone()))
        .collect();
    assert_eq!(
        exits,
        [
            (Value::Null, json!("SIGINT")),
            (json!(7), Value::Null),
            (Value::Null, json!("SIGINT")),
        ]
    );
    for e in sub.seen.iter().filter(|e| e["event"] == "process:event") {
        assert_eq!(e["data"]["process"]["pm_id"], json!(id), "{e}");
        assert!(e["data"]["at"].as_u64().is_some_and(|t| t > 0), "{e}");
    }
    // daemon:kill is the last event.
    assert_eq!(
        sub.seen.last().map(|e| e["event"].clone()),
        Some(json!("daemon:kill"))
    );
}

#[test]
fn a_filtered_subscriber_gets_only_its_events() {
    let h = TestHome::started();
    h.script(
        "both.sh",
        "echo o1\necho e1 >&2\nread -r line <&3\necho o2\necho e2 >&2\nexec sleep 1000\n",
    );
    let mut sub = h.subscribe(Some(&["log:err"]));
    let d = h.start(json!({"name": "both", "script": "both.sh", "kill_timeout": 300}));
    // o1 and the start events went through the daemon before e2 is written.
    h.wait_log("both", "o1\n");
    wait_until(SOON, "e1 is in the error log", || {
        h.err_log("both").contains("e1\n")
    });
    let r = h.send_data(json!({"id": pm_id_of(&d[0]), "type": "process:msg", "data": "go"}));
    assert_eq!(r["ok"], json!(true), "{r}");
    sub.wait_for("e2", |e| e["data"]["data"] == "e2\n");
    let got: Vec<(String, String)> = sub
        .seen
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or("").to_string(),
                e["data"]["data"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("log:err".to_string(), "e1\n".to_string()),
            ("log:err".to_string(), "e2\n".to_string())
        ]
    );
}

#[test]
fn a_line_written_in_two_halves_is_one_event() {
    let h = TestHome::started();
    h.script(
        "halves.py",
        "import os, socket, sys, time\n\
         ch = socket.socket(fileno=int(os.environ['NODE_CHANNEL_FD']))\n\
         sys.stdout.write('abc'); sys.stdout.flush()\n\
         ch.makefile('rb').readline()\n\
         sys.stdout.write('def\\n'); sys.stdout.flush()\n\
         time.sleep(1000)\n",
    );
    let mut sub = h.subscribe(Some(&["log:out"]));
    let d = h.start(json!({"name": "halves", "script": "halves.py", "kill_timeout": 300}));
    // The first half has gone through the daemon on its own.
    wait_until(SOON, "the log holds the first half", || {
        h.out_log("halves") == "abc"
    });
    let r = h.send_data(json!({"id": pm_id_of(&d[0]), "type": "process:msg", "data": 1}));
    assert_eq!(r["ok"], json!(true), "{r}");
    let ev = sub.wait_for("a log:out event", |e| e["event"] == "log:out");
    assert_eq!(ev["data"]["data"], "abcdef\n", "{ev}");
    assert_eq!(ev["data"]["process"]["name"], "halves");
    assert_eq!(h.out_log("halves"), "abcdef\n");
}

/// A line longer than an event may carry (64 KiB) goes out in pieces of at
/// most that, cut between characters, nothing lost.
#[test]
fn a_long_line_reaches_the_bus_in_pieces() {
    let h = TestHome::started();
    // 40,000 two-byte characters and a newline: 80,001 bytes in one write.
    h.script(
        "long.py",
        "import os, time\n\
         os.write(1, ('é' * 40000 + '\\n').encode())\n\
         time.sleep(1000)\n",
    );
    let mut sub = h.subscribe(Some(&["log:out"]));
    h.start(json!({"name": "long", "script": "long.py", "kill_timeout": 300}));
    let mut got = String::new();
    while !got.ends_with('\n') {
        let ev = sub.wait_for("a log:out event", |e| e["event"] == "log:out");
        let piece = ev["data"]["data"].as_str().expect("text");
        assert!(piece.len() <= 64 * 1024, "a piece of {} bytes", piece.len());
        got.push_str(piece);
    }
    assert_eq!(got, format!("{}\n", "é".repeat(40000)));
}

#[test]
fn a_stuck_subscriber_blocks_nothing_and_learns_what_it_missed() {
    const LINE: usize = 100;
    const LINES: usize = 1_000_000;
    let h = TestHome::started();
    // 100 MB of 100-byte lines as fast as it can, then a numbered tick on
    // stderr every 100 ms.
    h.script(
        "flood.py",
        "import os, sys, time\n\
         chunk = (b'x' * 99 + b'\\n') * 10000\n\
         for _ in range(100):\n\
         \x20   v = memoryview(chunk)\n\
         \x20   while v:\n\
         \x20       v = v[os.write(1, v):]\n\
         n = 0\n\
         while True:\n\
         \x20   n += 1\n\
         \x20   os.write(2, b'tick %d\\n' % n)\n\
         \x20   time.sleep(0.1)\n",
    );
    // Subscribed to everything, and then never read (until the end).
    let mut stuck = h.connect();
    let r = stuck.call(&json!({"cmd": "subscribe"}));
    assert_eq!(r["result"], json!({"subscribed": true}), "{r}");

    h.start(
        json!({"name": "flood", "script": "flood.py", "autorestart": false,
                   "kill_timeout": 300}),
    );
    let out = h.log_path("flood", "out");
    let total = (LINE * LINES) as u64;
    let mut pinger = h.connect();
    let mut slowest = Duration::ZERO;
    wait_until(
        Duration::from_secs(60),
        "the out log holds all 100 MB",
        || {
            let t0 = Instant::now();
            let r = pinger.call(&json!({"cmd": "ping"}));
            let took = t0.elapsed();
            assert_eq!(r["ok"], json!(true), "{r}");
            assert!(took < Duration::from_secs(1), "a ping took {took:?}");
            slowest = slowest.max(took);
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            assert!(size <= total, "the out log has {size} bytes");
            size == total
        },
    );
    eprintln!("slowest ping during the flood: {slowest:?}");

    // Now read: every line is an event; a bus:dropped comes before the
    // first tick that gets through.
    let mut out_lines = 0u64;
    let mut dropped = 0u64;
    let first_tick = loop {
        let ev = stuck.read_response();
        match ev["event"].as_str() {
            Some("log:out") => {
                assert_eq!(
                    ev["data"]["data"].as_str().map(str::len),
                    Some(LINE),
                    "{ev}"
                );
                out_lines += 1;
            }
            Some("bus:dropped") => {
                let n = ev["data"]["count"].as_u64().unwrap_or(0);
                assert!(n > 0, "{ev}");
                dropped += n;
            }
            Some("log:err") => {
                let line = ev["data"]["data"].as_str().unwrap_or("");
                let n: u64 = line
                    .strip_prefix("tick ")
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or_else(|| panic!("unexpected error line {ev}"));
                break n;
            }
            Some("process:event") => {}
            _ => panic!("unexpected event {ev}"),
        }
    };
    assert!(dropped > 0, "no bus:dropped before the first tick");
    assert!(out_lines < LINES as u64, "nothing was dropped");
    // Every line was either delivered or counted, and so was every tick
    // before the first one delivered.
    assert_eq!(
        out_lines + dropped,
        LINES as u64 + (first_tick - 1),
        "{out_lines} lines delivered, {dropped} dropped, first tick {first_tick}"
    );
    assert_eq!(std::fs::metadata(&out).map(|m| m.len()).ok(), Some(total));
}

#[test]
fn logs_prints_the_last_lines() {
    let h = TestHome::started();
    h.script(
        "lines.sh",
        "for i in 1 2 3 4 5 6 7 8; do echo \"line $i\"; echo \"err $i\" >&2; done\nexec sleep 1000\n",
    );
    let d = h.start(json!({"name": "lines", "script": "lines.sh", "kill_timeout": 300}));
    let id = pm_id_of(&d[0]);
    h.wait_log("lines", "line 8\n");
    wait_until(SOON, "err 8 is in the error log", || {
        h.err_log("lines").contains("err 8\n")
    });
    let prefix = format!("{id}|lines| ");
    let run_logs = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["logs", "lines", "--nostream", "--lines", "5"];
        args.extend_from_slice(extra);
        let out = h.corral(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let tail = |what: &str, pre: &str| -> Vec<String> {
        (4..=8).map(|i| format!("{pre}{what} {i}")).collect()
    };
    // Header lines name the file; the others are the lines, prefixed.
    let split = |lines: Vec<String>| -> (Vec<String>, Vec<String>) {
        lines.into_iter().partition(|l| l.starts_with(&prefix))
    };

    let (body, headers) = split(run_logs(&[]));
    let mut want = tail("line", &prefix);
    want.extend(tail("err", &prefix));
    assert_eq!(body, want);
    let out_path = h.log_path("lines", "out").display().to_string();
    let err_path = h.log_path("lines", "error").display().to_string();
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert!(headers[0].contains(&out_path), "{headers:?}");
    assert!(headers[1].contains(&err_path), "{headers:?}");
    assert!(
        !headers.iter().any(|l| l.contains('\x1b')),
        "colour: {headers:?}"
    );

    let mut want = tail("line", "");
    want.extend(tail("err", ""));
    assert_eq!(run_logs(&["--raw"]), want);

    let (body, headers) = split(run_logs(&["--err"]));
    assert_eq!(body, tail("err", &prefix));
    assert_eq!(headers.len(), 1, "{headers:?}");
    assert!(headers[0].contains(&err_path), "{headers:?}");
    assert_eq!(run_logs(&["--err", "--raw"]), tail("err", ""));
    assert_eq!(run_logs(&["--out", "--raw"]), tail("line", ""));
}

/// Run `corral <args>` (which runs until killed) until it prints a line
/// starting with `prefix`; that line. The command is killed either way.
fn follow(h: &TestHome, args: &[&str], prefix: &str) -> String {
    let mut child = h
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run corral");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + SOON;
    let mut printed = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with(prefix) => break Some(l),
            Ok(l) => printed.push(l),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    reader.join().expect("the reader ends");
    found.unwrap_or_else(|| panic!("corral {args:?} printed no {prefix:?} line: {printed:?}"))
}

/// An app that writes `tick <n>` every 100 ms.
fn ticker(h: &TestHome, name: &str) -> u32 {
    h.script(
        "ticker.sh",
        "i=0\nwhile :; do i=$((i+1)); echo \"tick $i\"; sleep 0.1; done\n",
    );
    let d = h.start(json!({"name": name, "script": "ticker.sh", "kill_timeout": 300}));
    h.wait_log(name, "tick 1\n");
    pm_id_of(&d[0])
}

#[test]
fn logs_follows_new_lines() {
    let h = TestHome::started();
    let id = ticker(&h, "ticker");
    // With --lines 0 nothing old is printed: a tick is a line followed.
    let prefix = format!("{id}|ticker| tick ");
    let line = follow(&h, &["logs", "ticker", "--lines", "0"], &prefix);
    let n: u64 = line[prefix.len()..].parse().expect("tick N, whole");
    assert!(n >= 1, "{line}");
}

#[test]
fn the_bus_verb_prints_event_lines() {
    let h = TestHome::started();
    ticker(&h, "ticker");
    let line = follow(&h, &["bus", "--events", "log:out"], "{");
    let ev: Value = serde_json::from_str(&line).expect("an event line is JSON");
    assert_eq!(ev["event"], "log:out", "{ev}");
    assert_eq!(ev["data"]["process"]["name"], "ticker", "{ev}");
    let data = ev["data"]["data"].as_str().unwrap_or("");
    assert!(data.starts_with("tick ") && data.ends_with('\n'), "{ev}");
}

/// Send `word` to the `rw` app, which writes `out <word>` and `err <word>`.
fn say(h: &TestHome, id: u32, word: &str) {
    let r = h.send_data(json!({"id": id, "type": "process:msg", "data": word}));
    assert_eq!(r["ok"], json!(true), "{r}");
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX)
}

fn json_out(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{}: {e}", text(out)))
}

#[test]
fn flush_and_reload_logs() {
    let h = TestHome::started();
    h.script(
        "rw.py",
        "import json, os, socket, sys\n\
         ch = socket.socket(fileno=int(os.environ['NODE_CHANNEL_FD']))\n\
         for line in ch.makefile('rb'):\n\
         \x20   w = json.loads(line)['data']\n\
         \x20   print('out ' + w, flush=True)\n\
         \x20   print('err ' + w, file=sys.stderr, flush=True)\n",
    );
    let d = h.start(json!({"name": "rw", "script": "rw.py", "kill_timeout": 300}));
    let id = pm_id_of(&d[0]);
    let (out, err) = (h.log_path("rw", "out"), h.log_path("rw", "error"));
    let wait_file = |path: &Path, want: &str| {
        wait_until(SOON, &format!("{} holds {want:?}", path.display()), || {
            read(path) == want
        });
    };

    say(&h, id, "a");
    wait_file(&out, "out a\n");
    wait_file(&err, "err a\n");
    assert_eq!(
        json_out(&h.corral(&["flush", "rw", "--json"])),
        json!({"files": 2})
    );
    assert_eq!((size(&out), size(&err)), (0, 0));
    // The app writes on, from the start of the emptied files.
    say(&h, id, "b");
    wait_file(&out, "out b\n");
    wait_file(&err, "err b\n");

    // logrotate's rename, then reload-logs.
    let rotated = out.with_extension("log.1");
    std::fs::rename(&out, &rotated).expect("rename the out log");
    say(&h, id, "c");
    wait_file(&rotated, "out b\nout c\n");
    assert!(!out.exists(), "nothing reopened out.log yet");
    assert_eq!(
        json_out(&h.corral(&["reload-logs", "--json"])),
        json!({"files": 2})
    );
    say(&h, id, "d");
    wait_file(&out, "out d\n");
    assert_eq!(read(&rotated), "out b\nout c\n");
    wait_file(&err, "err b\nerr c\nerr d\n");

    // The same with SIGUSR2 to the daemon.
    let rotated2 = out.with_extension("log.2");
    std::fs::rename(&out, &rotated2).expect("rename the out log");
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(h.daemon_pid(), libc::SIGUSR2) }, 0);
    wait_until(SOON, "the daemon reopened the logs", || out.exists());
    say(&h, id, "e");
    wait_file(&out, "out e\n");
    assert_eq!(read(&rotated2), "out d\n");
    assert_eq!(read(&rotated), "out b\nout c\n");
}
