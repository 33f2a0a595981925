//! The command line: PM2's verbs and flag names, output for people by
//! default and JSON for programs. Exit status: 0 done, 1 the daemon refused,
//! 2 wrong usage, 3 no daemon could be reached or started.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral::__private as daemon;
use corral::client::{Client, Error, Paths};
use corral::protocol::{Description, Event, Status, Target};
use getopts::{Matches, Options};
use serde_json::{Map, Value, json};

const EXIT_REFUSED: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_NO_DAEMON: i32 = 3;

/// One verb: its names, usage line and summary.
struct Verb {
    names: &'static [&'static str],
    usage: &'static str,
    summary: &'static str,
}

impl Verb {
    /// Its name; the others in `names` are aliases.
    fn name(&self) -> &'static str {
        self.names.first().copied().unwrap_or_default()
    }
}

const VERBS: &[Verb] = &[
    Verb {
        names: &["start"],
        usage: "start [script|config|-|name|id] [options] [-- args...]",
        summary: "start an app, the apps of a config file (- reads one from stdin), or a known stopped app",
    },
    Verb {
        names: &["stop"],
        usage: "stop <target...> [--watch]",
        summary: "stop apps (kill signal, then SIGKILL after kill_timeout)",
    },
    Verb {
        names: &["restart"],
        usage: "restart <target...> [--update-env] [--env NAME] [--watch] [start options]",
        summary: "stop then start apps again, with new options if given",
    },
    Verb {
        names: &["reload"],
        usage: "reload <target...> [--update-env] [--env NAME] [start options]",
        summary: "replace apps one instance at a time, without downtime (others: restart)",
    },
    Verb {
        names: &["gracefulReload"],
        usage: "gracefulReload <target...> [--update-env] [--env NAME] [start options]",
        summary: "reload, sending each old process the shutdown message first",
    },
    Verb {
        names: &["startOrRestart"],
        usage: "startOrRestart <config> [--env NAME] [--only NAMES]",
        summary: "start the config's apps, restarting those that run",
    },
    Verb {
        names: &["startOrReload"],
        usage: "startOrReload <config> [--env NAME] [--only NAMES]",
        summary: "start the config's apps, reloading those that run",
    },
    Verb {
        names: &["startOrGracefulReload"],
        usage: "startOrGracefulReload <config> [--env NAME] [--only NAMES]",
        summary: "start the config's apps, gracefully reloading those that run",
    },
    Verb {
        names: &["delete", "del"],
        usage: "delete <target...>",
        summary: "stop apps and forget them",
    },
    Verb {
        names: &["reset"],
        usage: "reset <target...>",
        summary: "set the restart counters of apps to zero",
    },
    Verb {
        names: &["list", "ls", "l", "ps", "status"],
        usage: "list [--json]",
        summary: "show every app",
    },
    Verb {
        names: &["jlist"],
        usage: "jlist",
        summary: "every app as JSON, in PM2's shape",
    },
    Verb {
        names: &["prettylist"],
        usage: "prettylist",
        summary: "every app as indented JSON",
    },
    Verb {
        names: &["monit"],
        usage: "monit",
        summary: "a live dashboard of every app (q quits)",
    },
    Verb {
        names: &["env"],
        usage: "env <pm_id>",
        summary: "print the env variables given to an app",
    },
    Verb {
        names: &["id"],
        usage: "id <name>",
        summary: "print the pm_ids of the apps of a name, as a JSON array",
    },
    Verb {
        names: &["pid"],
        usage: "pid [target]",
        summary: "print the pids of apps (0 when not running), one a line",
    },
    Verb {
        names: &["describe", "show", "desc", "info"],
        usage: "describe <name|id|namespace|all> [--json]",
        summary: "show everything about apps",
    },
    Verb {
        names: &["signal", "sendSignal"],
        usage: "signal <SIGNAL> <name|id|namespace|all>",
        summary: "send a signal to apps (their process group with treekill)",
    },
    Verb {
        names: &["scale"],
        usage: "scale <name> <n|+n|-n>",
        summary: "grow or shrink the number of instances of an app",
    },
    Verb {
        names: &["logs"],
        usage: "logs [name|id|namespace|all] [--lines N] [--nostream] [--raw] [--out|--err] [--timestamp[=FMT]] [--json|--format]",
        summary: "print the last lines of apps' logs, then follow them",
    },
    Verb {
        names: &["flush"],
        usage: "flush [name|id|namespace|all]",
        summary: "empty the log files of apps (of every app without a target)",
    },
    Verb {
        names: &["reload-logs", "reloadLogs"],
        usage: "reload-logs [--rotate]",
        summary: "reopen every log file (after logrotate renamed them); --rotate: rename each to <name>-<out|err>-<N>.log first",
    },
    Verb {
        names: &["send"],
        usage: "send <pm_id> <line>",
        summary: "write a line to an app's standard input",
    },
    Verb {
        names: &["msg", "send-data"],
        usage: "msg <pm_id> <json> [--topic TOPIC]",
        summary: "send a message to an app's IPC channel (process.on('message'))",
    },
    Verb {
        names: &["bus"],
        usage: "bus [--events NAMES]",
        summary: "print the daemon's events as JSON lines",
    },
    Verb {
        names: &["ping"],
        usage: "ping",
        summary: "check the daemon answers (starting it if needed)",
    },
    Verb {
        names: &["dump", "save"],
        usage: "dump [--force] [--json]",
        summary: "save every app (options, pm_id, wanted state) for resurrect, to $DUMP_FILE_PATH or the home's dump.json",
    },
    Verb {
        names: &["resurrect"],
        usage: "resurrect [--from FILE] [--json]",
        summary: "bring back the saved apps that are not in the list (PM2's dump.pm2 with --from)",
    },
    Verb {
        names: &["kill"],
        usage: "kill",
        summary: "stop every app and the daemon",
    },
    Verb {
        names: &["wait"],
        usage: "wait <name|id|namespace|all> <online|ready|stopped|gone> [--timeout DUR]",
        summary: "block until apps are in a state (exit 1 on timeout)",
    },
    Verb {
        names: &["startup"],
        usage: "startup [platform] [-u USER] [--hp DIR] [--service-name NAME] [--dry-run]",
        summary: "write and enable a boot unit that brings the daemon and its saved apps back",
    },
    Verb {
        names: &["unstartup"],
        usage: "unstartup [platform] [-u USER] [--hp DIR] [--service-name NAME] [--dry-run]",
        summary: "disable and remove the boot unit written by startup",
    },
    Verb {
        names: &["update"],
        usage: "update [--json]",
        summary: "replace the daemon by the binary now on disk; apps keep running (same pids, output kept)",
    },
    Verb {
        names: &["daemon"],
        usage: "daemon [--no-daemon] [--allow-uid USER]... [--allow-gid GROUP]...",
        summary: "run the daemon (in the background, or in the foreground with --no-daemon)",
    },
    Verb {
        names: &["runtime"],
        usage: "runtime <script|config> [start options] [--raw] [--logs] [--exit-with first|last|max] [-- args...]",
        summary: "run apps in the foreground as a container's entrypoint (PID 1): output on stdout/stderr, exit when none is left",
    },
    Verb {
        names: &["ecosystem", "init"],
        usage: "ecosystem [simple] [--force]",
        summary: "write a sample ecosystem.config.js in the current directory",
    },
    Verb {
        names: &["help"],
        usage: "help [verb]",
        summary: "show help for corral or one verb",
    },
];

/// Flags of `start`: (short, long, value name or "" for a switch, help).
const START_FLAGS: &[(&str, &str, &str, &str)] = &[
    (
        "n",
        "name",
        "NAME",
        "name of the app (default: script file name)",
    ),
    (
        "i",
        "instances",
        "N",
        "run N instances (max: one per CPU); cluster mode for a Node app",
    ),
    (
        "",
        "merge-logs",
        "",
        "all instances write the same log files",
    ),
    (
        "",
        "instance-var",
        "VAR",
        "variable with the instance index (NODE_APP_INSTANCE)",
    ),
    (
        "",
        "namespace",
        "NS",
        "namespace of the app (default: default)",
    ),
    (
        "",
        "interpreter",
        "PROG",
        "interpreter, or none to run the script itself",
    ),
    (
        "",
        "interpreter-args",
        "ARGS",
        "arguments of the interpreter",
    ),
    ("", "node-args", "ARGS", "same as --interpreter-args"),
    (
        "",
        "cwd",
        "DIR",
        "working directory (default: the current one)",
    ),
    (
        "o",
        "output",
        "FILE",
        "stdout log file (/dev/null to discard)",
    ),
    ("e", "error", "FILE", "stderr log file (may equal --output)"),
    (
        "",
        "log-date-format",
        "FMT",
        "prefix log lines with a timestamp in this format",
    ),
    ("", "time", "", "prefix log lines with YYYY-MM-DDTHH:mm:ss"),
    (
        "l",
        "log",
        "[FILE]",
        "also a combined stdout+stderr file (--log alone: logs/<name>.log; else --log FILE or -l FILE)",
    ),
    (
        "",
        "log-type",
        "TYPE",
        "json: each log line as a JSON object (default text)",
    ),
    (
        "",
        "max-log-size",
        "SIZE",
        "rotate a log file before it passes SIZE (e.g. 10M)",
    ),
    (
        "",
        "log-retain",
        "N",
        "rotated files kept per log file (default 5)",
    ),
    (
        "",
        "disable-logs",
        "",
        "write no log file (stdout and stderr discarded)",
    ),
    ("p", "pid", "FILE", "pid file of the app"),
    (
        "",
        "min-uptime",
        "DUR",
        "exits sooner than this are unstable (default 1000)",
    ),
    (
        "",
        "max-restarts",
        "N",
        "unstable restarts in a row before errored (default 16)",
    ),
    (
        "k",
        "kill-timeout",
        "DUR",
        "from the stop signal to SIGKILL (default 1600)",
    ),
    ("", "kill-signal", "SIG", "stop signal (default SIGINT)"),
    (
        "",
        "restart-delay",
        "DUR",
        "wait this long before restarting (default 0)",
    ),
    (
        "",
        "no-autorestart",
        "",
        "do not restart the app when it exits",
    ),
    (
        "",
        "no-autostart",
        "",
        "register the app without starting it",
    ),
    (
        "",
        "stop-exit-codes",
        "CODES",
        "exit codes that do not restart (comma-separated)",
    ),
    ("f", "force", "", "start even if an app of that name runs"),
    (
        "",
        "wait-ready",
        "",
        "online only when the app says ready (IPC or sd_notify)",
    ),
    (
        "",
        "listen-timeout",
        "DUR",
        "with --wait-ready: wait this long (default 3000)",
    ),
    (
        "",
        "shutdown-with-message",
        "",
        "stop with the shutdown message, not a signal",
    ),
    ("", "no-ipc", "", "give the app no IPC channel"),
    (
        "",
        "max-memory-restart",
        "SIZE",
        "restart when the app's memory passes this (100M)",
    ),
    (
        "",
        "exp-backoff-restart-delay",
        "DUR",
        "first delay of an exponential restart backoff",
    ),
    (
        "",
        "min-restart-interval",
        "DUR",
        "least time from a start to an automatic restart (default 100ms)",
    ),
    (
        "c",
        "cron-restart",
        "EXPR",
        "restart on this cron schedule (5 or 6 fields)",
    ),
    ("", "cron", "EXPR", "same as --cron-restart"),
    ("", "watch", "", "restart when files under cwd change"),
    (
        "",
        "ignore-watch",
        "LIST",
        "names or globs not to watch (space-separated)",
    ),
    (
        "",
        "watch-delay",
        "DUR",
        "restart this long after a change (default 1000)",
    ),
    (
        "",
        "no-treekill",
        "",
        "signal the main process only, not its group",
    ),
    ("", "uid", "USER", "run as this user (daemon as root only)"),
    (
        "",
        "gid",
        "GROUP",
        "run with this group (daemon as root only)",
    ),
    ("x", "execute-command", "", "run in fork mode"),
    (
        "w",
        "write",
        "",
        "write the resolved options to <name>-corral.json in cwd",
    ),
    (
        "",
        "source-map-support",
        "",
        "node: add --enable-source-maps",
    ),
    (
        "",
        "disable-source-map-support",
        "",
        "never add --enable-source-maps",
    ),
    (
        "",
        "env",
        "NAME",
        "config files: use env_<NAME> of each app",
    ),
    (
        "",
        "only",
        "NAMES",
        "config files: start only these apps (comma-separated)",
    ),
    ("", "json", "", "print the result as JSON"),
];

fn usage_error(msg: &str) -> i32 {
    eprintln!("corral: {msg}");
    eprintln!("Try 'corral help' for the verbs.");
    EXIT_USAGE
}

fn find_verb(name: &str) -> Option<&'static Verb> {
    VERBS.iter().find(|v| v.names.contains(&name))
}

/// The closest of `known` to `word`, if it is close enough to be a typo.
fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word_l = word.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (daemon::edit_distance(&word_l, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= 2 && 3 * d <= word.len().max(k.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// "unknown verb", with the closest verb.
fn unknown_verb(verb: &str) -> String {
    let all = VERBS.iter().flat_map(|v| v.names.iter().copied());
    match closest(verb, all) {
        Some(near) => format!("unknown verb `{verb}`; did you mean `{near}`?"),
        None => format!("unknown verb `{verb}`"),
    }
}

/// `--no-color` was given.
static NO_COLOR_FLAG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether to colour standard output: a terminal, and neither `NO_COLOR`
/// (any non-empty value) nor `--no-color`.
pub fn colour_on() -> bool {
    !NO_COLOR_FLAG.load(std::sync::atomic::Ordering::Relaxed)
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
}

/// Run the command line; the exit status.
pub fn run(args: &[String]) -> i32 {
    // The daemon first and at once: the rest of this function is the
    // command line's, and a daemon that never runs it keeps less of the
    // binary resident (scripts/daemon-layout.py). What the general path
    // does first (`--no-color`, `--help`) sends it there.
    if let Some((verb, rest)) = args.split_first()
        && verb == "daemon"
        && !rest
            .iter()
            .any(|a| matches!(a.as_str(), "--no-color" | "-h" | "--help"))
    {
        return cmd_daemon(rest);
    }
    // `--no-color` is accepted anywhere before `--`, for every verb.
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let mut args = args.to_vec();
    if args.iter().take(end).any(|a| a == "--no-color") {
        NO_COLOR_FLAG.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut i = 0;
        args.retain(|a| {
            i += 1;
            !(i <= end && a == "--no-color")
        });
    }
    let args = args.as_slice();
    let Some(verb) = args.first() else {
        print!("{}", general_help());
        return EXIT_USAGE;
    };
    let rest = args.get(1..).unwrap_or_default();
    match verb.as_str() {
        "-h" | "--help" => {
            print!("{}", general_help());
            return 0;
        }
        "-v" | "-V" | "--version" => {
            println!("corral {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        _ => {}
    }
    let Some(v) = find_verb(verb) else {
        return usage_error(&unknown_verb(verb));
    };
    if rest
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help")
    {
        print!("{}", verb_help(v));
        return 0;
    }
    match v.name() {
        "start" => cmd_start(rest),
        "stop" | "restart" | "reload" | "delete" | "reset" | "gracefulReload" => {
            cmd_act(v.name(), rest)
        }
        "startOrRestart" | "startOrReload" | "startOrGracefulReload" => {
            cmd_start_or(v.name(), rest)
        }
        "prettylist" => cmd_prettylist(rest),
        "monit" => crate::monit::cmd_monit(rest),
        "env" => cmd_env(rest),
        "id" => cmd_id(rest),
        "pid" => cmd_pid(rest),
        "msg" => cmd_msg(rest),
        "list" => cmd_list(rest, false),
        "jlist" => cmd_list(rest, true),
        "describe" => cmd_describe(rest),
        "signal" => cmd_signal(rest),
        "ping" => cmd_ping(rest),
        "logs" => cmd_logs(rest),
        "scale" => cmd_scale(rest),
        "flush" => cmd_flush(rest),
        "reload-logs" => cmd_reload_logs(rest),
        "dump" => cmd_dump(rest),
        "resurrect" => cmd_resurrect(rest),
        "send" => cmd_send(rest),
        "bus" => cmd_bus(rest),
        "kill" => cmd_kill(rest),
        "update" => cmd_update(rest),
        "daemon" => cmd_daemon(rest),
        "runtime" => cmd_runtime(rest),
        "ecosystem" => cmd_ecosystem(rest),
        "wait" => cmd_wait(rest),
        "startup" | "unstartup" => cmd_startup(v.name(), rest),
        "help" => cmd_help(rest),
        _ => usage_error(&format!("unknown verb `{verb}`")),
    }
}

fn general_help() -> String {
    let mut s = String::from(
        "corral — a process manager with PM2's interface\n\n\
         Usage: corral <verb> [options] [target or script] [-- app args]\n\n\
         Verbs:\n",
    );
    for v in VERBS {
        s.push_str(&format!("  {:<12} {}\n", v.name(), v.summary));
    }
    s.push_str(
        "\nTargets: an app name, a pm_id, a namespace, all; for stop, restart, reload,\n\
         delete and reset also a script path, a config file, /regex/, several at once.\n\
         Environment: CORRAL_HOME (default ~/.corral), CORRAL_SOCKET, CORRAL_BIN, DUMP_FILE_PATH,\n\
         CORRAL_TIMEOUT (seconds the daemon may take to answer, default 30).\n\
         Exit status: 0 done, 1 refused by the daemon, 2 wrong usage, 3 no daemon.\n\
         'corral help <verb>' or 'corral <verb> --help' for a verb; 'man corral' for all.\n",
    );
    s
}

fn verb_help(v: &Verb) -> String {
    let mut s = format!("Usage: corral {}\n\n{}.\n", v.usage, capital(v.summary));
    if v.names.len() > 1 {
        let also = v.names.get(1..).unwrap_or_default();
        s.push_str(&format!("Also: {}\n", also.join(", ")));
    }
    let opts = verb_options(v.name());
    let body = opts.usage("");
    let body = body.trim_start_matches('\n').trim_start_matches("Options:");
    if !body.trim().is_empty() {
        s.push_str("\nOptions:");
        s.push_str(body);
    }
    s
}

fn capital(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn verb_options(verb: &str) -> Options {
    let mut o = Options::new();
    o.optflag("h", "help", "show this help");
    match verb {
        "start" | "runtime" => {
            if verb == "runtime" {
                o.optflag("", "raw", "app output without the `name| ` prefix");
                o.optflag(
                    "",
                    "logs",
                    "also write the apps' log files (default: output on stdout/stderr only)",
                );
                o.optopt(
                    "",
                    "exit-with",
                    "once every app has ended: exit with the code of the first, the last (default) or the highest",
                    "first|last|max",
                );
            }
            for (short, long, hint, help) in START_FLAGS {
                if hint.is_empty() {
                    o.optflag(short, long, help);
                } else if let Some(h) = hint.strip_prefix('[') {
                    o.optflagopt(short, long, help, h.trim_end_matches(']'));
                } else {
                    o.optopt(short, long, help, hint);
                }
            }
        }
        "restart" | "reload" | "gracefulReload" => {
            for (short, long, hint, help) in START_FLAGS {
                let help = match *long {
                    "watch" => "turn watching on if it is off, off if it is on",
                    "env" => "use env_<NAME> of the apps from now on",
                    "only" => "config files: act on these apps only (comma-separated)",
                    _ => help,
                };
                if hint.is_empty() {
                    o.optflag(short, long, help);
                } else {
                    o.optopt(short, long, help, hint);
                }
            }
            o.optflag(
                "a",
                "update-env",
                "give the apps your current environment (keys you no longer have are removed)",
            );
            o.optopt(
                "",
                "parallel",
                "accepted for PM2; corral acts in order",
                "N",
            );
        }
        "stop" => {
            o.optflag(
                "",
                "watch",
                "stop watching too (a later restart does not watch)",
            );
            o.optopt(
                "",
                "only",
                "config files: these apps only (comma-separated)",
                "NAMES",
            );
            o.optflag("", "json", "print the result as JSON");
        }
        "delete" | "reset" => {
            o.optopt(
                "",
                "only",
                "config files: these apps only (comma-separated)",
                "NAMES",
            );
            o.optflag("", "json", "print the result as JSON");
        }
        "startOrRestart" | "startOrReload" | "startOrGracefulReload" => {
            o.optopt("", "env", "use env_<NAME> of each app", "NAME");
            o.optopt("", "only", "these apps only (comma-separated)", "NAMES");
            o.optflag(
                "a",
                "update-env",
                "give running apps your current environment",
            );
            o.optflag("", "json", "print the result as JSON");
        }
        "list" | "describe" | "signal" | "ping" | "kill" | "update" | "scale" | "pid" | "env"
        | "id" => {
            o.optflag("", "json", "print the result as JSON");
        }
        "logs" => {
            o.optopt(
                "",
                "lines",
                "how many lines of each file first (default 15)",
                "N",
            );
            o.optflag("", "nostream", "print the last lines and exit");
            o.optflag("", "raw", "the lines only, without app prefixes or headers");
            o.optflag("", "out", "standard output only");
            o.optflag("", "err", "standard error only");
            o.optflagopt(
                "",
                "timestamp",
                "prefix followed lines with the time they came (--timestamp=FMT; default YYYY-MM-DD-HH:mm:ss)",
                "FMT",
            );
            o.optflag(
                "",
                "json",
                "follow as JSON lines (PM2's), without the last lines first",
            );
            o.optflag(
                "",
                "format",
                "follow as key=value lines (PM2's), without the last lines first",
            );
        }
        "flush" => {
            o.optflag("", "json", "print the result as JSON");
        }
        "reload-logs" => {
            o.optflag("", "json", "print the result as JSON");
            o.optflag(
                "",
                "rotate",
                "rename each file to the next free <name>-<out|err>-<N>.log, then reopen",
            );
        }
        "dump" => {
            o.optflag("", "json", "print the result as JSON");
            o.optflag(
                "f",
                "force",
                "save even an empty list over a dump that holds apps",
            );
        }
        "resurrect" => {
            o.optflag("", "json", "print the result as JSON");
            o.optopt(
                "",
                "from",
                "read this dump instead: corral's, or PM2's dump.pm2",
                "FILE",
            );
        }
        "msg" => {
            o.optopt("", "topic", "the packet's topic", "TOPIC");
        }
        "ecosystem" => {
            o.optflag("f", "force", "replace an existing ecosystem.config.js");
        }
        "bus" => {
            o.optopt(
                "",
                "events",
                "only these events (comma-separated; log:* is a prefix)",
                "NAMES",
            );
        }
        "wait" => {
            o.optopt(
                "",
                "timeout",
                "give up after this long, with exit status 1 (default 10s)",
                "DUR",
            );
        }
        "startup" | "unstartup" => {
            o.optopt(
                "u",
                "user",
                "the user the daemon runs as (default: you)",
                "USER",
            );
            o.optopt(
                "",
                "hp",
                "the user's home directory; CORRAL_HOME is DIR/.corral",
                "DIR",
            );
            o.optopt(
                "",
                "service-name",
                "the unit's name (default corral-USER)",
                "NAME",
            );
            o.optflag(
                "",
                "dry-run",
                "print the unit and the commands; write and run nothing",
            );
        }
        "daemon" => {
            o.optflag("", "no-daemon", "stay in the foreground");
            o.optopt(
                "",
                "sample-interval",
                "sample the apps with max_memory_restart this often (default 1s)",
                "DUR",
            );
            o.optopt(
                "",
                "max-log-size",
                "rotate log files past this size, for apps that set no max_log_size and the daemon's own log (default: never)",
                "SIZE",
            );
            o.optopt(
                "",
                "log-retain",
                "rotated files kept, for apps that set no log_retain (default 5)",
                "N",
            );
            o.optmulti(
                "",
                "allow-uid",
                "obey this user's connections too (repeatable)",
                "USER",
            );
            o.optmulti(
                "",
                "allow-gid",
                "obey connections of processes of this group too (repeatable)",
                "GROUP",
            );
            o.optflag("", "lifeline", "(internal) stop when stdin closes");
            o.optopt(
                "",
                "handover",
                "(internal) take over from the previous image (corral update)",
                "FILE",
            );
        }
        _ => {}
    }
    o
}

/// Parse the flags of `verb`; the matches and the words after `--`.
fn parse(verb: &str, args: &[String]) -> Result<(Matches, Vec<String>), i32> {
    let (ours, extra) = match args.iter().position(|a| a == "--") {
        Some(i) => (
            args.get(..i).unwrap_or_default(),
            args.get(i + 1..).unwrap_or_default().to_vec(),
        ),
        None => (args, Vec::new()),
    };
    let opts = verb_options(verb);
    opts.parse(ours).map(|m| (m, extra)).map_err(|e| match &e {
        getopts::Fail::UnrecognizedOption(name) if name.len() > 1 => {
            // The long flags of this verb, read from its help.
            let usage = opts.usage("");
            let longs = usage
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("--"))
                .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()));
            match closest(name, longs) {
                Some(near) => usage_error(&format!(
                    "{verb}: unknown flag --{name}; did you mean --{near}?"
                )),
                None => usage_error(&format!("{verb}: unknown flag --{name}")),
            }
        }
        _ => usage_error(&format!("{verb}: {e}")),
    })
}

/// `--log PATH` as PM2 reads it (its optional value is the next word
/// unless that is a flag) made `--log=PATH`, which is how getopts takes an
/// optional value.
fn optional_value_joined(args: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a.clone());
            out.extend(it.cloned());
            break;
        }
        match it.peek() {
            Some(next) if a == flag && !next.starts_with('-') => {
                out.push(format!("{flag}={next}"));
                it.next();
            }
            _ => out.push(a.clone()),
        }
    }
    out
}

fn connect(launch: bool) -> Result<Client, i32> {
    let paths = Paths::from_env().map_err(report)?;
    Client::connect_with(&paths, launch).map_err(report)
}

/// Print an error and give its exit status.
fn report(e: Error) -> i32 {
    eprintln!("corral: {e}");
    match e {
        Error::Daemon { .. } | Error::Invalid(_) => EXIT_REFUSED,
        Error::NoDaemon(_) | Error::Io(_) | Error::Closed => EXIT_NO_DAEMON,
    }
}

fn print_warnings(c: &Client) {
    for w in c.warnings() {
        eprintln!("corral: warning: {w}");
    }
}

/// The result of an action: JSON, or the table of every app.
fn show(c: &mut Client, json: bool, descs: &[Description]) -> i32 {
    if json {
        println!("{}", serde_json::to_string(descs).unwrap_or_default());
        return 0;
    }
    print_table(c)
}

/// The table of every app.
fn print_table(c: &mut Client) -> i32 {
    match c.list() {
        Ok(all) => {
            print!("{}", table(&all));
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_start(args: &[String]) -> i32 {
    let args = &optional_value_joined(args, "--log");
    let (m, extra) = match parse("start", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    warn_env_left_out();
    let json = m.opt_present("json");
    // As PM2: `start` alone starts ./ecosystem.config.js.
    let default_config = [ECOSYSTEM_FILE.to_string()];
    let what = match m.free.as_slice() {
        [what] => what,
        [] if Path::new(ECOSYSTEM_FILE).is_file() => &default_config[0],
        _ => return usage_error("start: give one script, config file, name or id"),
    };
    let env_name = m.opt_str("env");
    let only: Vec<String> = m
        .opt_str("only")
        .map(|s| {
            s.split([',', ' '])
                .filter(|x| !x.trim().is_empty())
                .map(|x| x.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    let is_stdin = what == "-";
    let is_config = is_stdin || corral::client::is_config_file(what);
    let app = match app_options(&m, &extra) {
        Ok(a) => a,
        Err(msg) => return usage_error(&format!("start: {msg}")),
    };
    if is_config && !app.is_empty() {
        let keys: Vec<&String> = app.keys().collect();
        return usage_error(&format!(
            "start: {} cannot be used with a config file ({what})",
            keys.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !is_config && (env_name.is_some() || !only.is_empty()) {
        return usage_error("start: --env and --only need a config file");
    }
    // A config is read before the daemon is reached: a broken one starts
    // nothing, not even the daemon.
    let config = match is_config {
        true => match read_start_config(what) {
            Ok(c) => Some(c),
            Err(e) => return report(e),
        },
        false => None,
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = if let Some(config) = config {
        // As PM2: apps of the config that run are restarted with its
        // options (startOrRestart), the others started.
        let update = corral::client::Update {
            env_name: env_name.clone(),
            ..Default::default()
        };
        match start_or(&mut c, "restart", config, &only, &update) {
            Ok(d) => Ok(d),
            Err(code) => return code,
        }
    } else if app.is_empty() && !Path::new(what).exists() && known(&mut c, what) {
        let _p = Progress::show(&format!("starting {what}"));
        c.start_target(Target::from(what))
    } else {
        // The answer comes once the app is online (with --wait-ready: ready).
        let waits = app.contains_key("wait_ready");
        let _p = Progress::show(&match waits {
            true => format!("starting {what}, waiting for it to say it is ready"),
            false => format!("starting {what}"),
        });
        let mut app = app;
        app.insert("script".into(), json!(what));
        c.start_apps(vec![Value::Object(app)], None)
    };
    print_warnings(&c);
    match result {
        Ok(descs) => show(&mut c, json, &descs),
        Err(e) => report(e),
    }
}

/// `runtime`: the daemon in the foreground with the apps of a script or
/// config, as PM2's `pm2-runtime` (PID 1 of a container).
fn cmd_runtime(args: &[String]) -> i32 {
    let (m, extra) = match parse("runtime", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let default_config = [ECOSYSTEM_FILE.to_string()];
    let what = match m.free.as_slice() {
        [what] => what,
        [] if Path::new(ECOSYSTEM_FILE).is_file() => &default_config[0],
        _ => return usage_error("runtime: give one script or config file"),
    };
    let exit_with = match m.opt_str("exit-with") {
        None => daemon::ExitWith::Last,
        Some(w) => match daemon::ExitWith::parse(&w) {
            Some(e) => e,
            None => {
                return usage_error(&format!(
                    "runtime: --exit-with {w}: give first, last or max"
                ));
            }
        },
    };
    let app = match app_options(&m, &extra) {
        Ok(a) => a,
        Err(msg) => return usage_error(&format!("runtime: {msg}")),
    };
    let is_config = what == "-" || corral::client::is_config_file(what);
    if is_config && !app.is_empty() {
        return usage_error(&format!(
            "runtime: start options cannot be used with a config file ({what})"
        ));
    }
    let env_name = m.opt_str("env");
    let only: Vec<String> = m
        .opt_str("only")
        .map(|s| {
            s.split([',', ' '])
                .filter(|x| !x.trim().is_empty())
                .map(|x| x.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    let here = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            return report(Error::Invalid(format!(
                "cannot read the current directory: {e}"
            )));
        }
    };
    let (apps, dir) = match is_config {
        true => match read_start_config(what) {
            Ok((apps, dir, _)) => (apps, dir),
            Err(e) => return report(e),
        },
        false => {
            let mut app = app;
            app.insert("script".into(), json!(what));
            (vec![Value::Object(app)], here)
        }
    };
    let logs = m.opt_present("logs");
    let mut picked = Vec::new();
    for mut app in apps {
        let Value::Object(obj) = &mut app else {
            picked.push(app);
            continue;
        };
        if !only.is_empty() {
            let name = obj.get("name").and_then(Value::as_str).unwrap_or("");
            if !only.iter().any(|o| o == name) {
                continue;
            }
        }
        // Paths are relative to the config file (or the current directory).
        let cwd = match obj.get("cwd").and_then(Value::as_str) {
            Some(c) => dir.join(c),
            None => dir.clone(),
        };
        obj.insert("cwd".into(), json!(cwd.display().to_string()));
        // Output goes to the console; files only where asked.
        if !logs {
            for (keys, key) in [
                (["output", "out_file"], "output"),
                (["error", "error_file"], "error"),
            ] {
                if !keys.iter().any(|k| obj.contains_key(*k)) {
                    obj.insert(key.into(), json!("/dev/null"));
                }
            }
        }
        picked.push(app);
    }
    if picked.is_empty() {
        return report(Error::Invalid(format!(
            "{what}: no app named {}",
            only.join(", ")
        )));
    }
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => return report(e),
    };
    daemon::run(daemon::Config {
        home: paths.home,
        socket: paths.socket,
        ready: None,
        detach_stdio: false,
        lifeline: false,
        sample_interval: daemon::DEFAULT_INTERVAL,
        max_log_size: None,
        log_retain: daemon::DEFAULT_RETAIN,
        allow_uid: Vec::new(),
        allow_gid: Vec::new(),
        handover: None,
        runtime: Some(daemon::Runtime {
            apps: picked,
            env_name,
            raw: m.opt_present("raw"),
            exit_with,
        }),
    })
}

/// The apps of the config `what` (a file, or `-` for stdin), the directory
/// its relative paths start from, and its name for errors.
fn read_start_config(what: &str) -> Result<(Vec<Value>, PathBuf, String), Error> {
    let here = std::env::current_dir()
        .map_err(|e| Error::Invalid(format!("cannot read the current directory: {e}")))?;
    if what == "-" {
        if std::io::stdin().is_terminal() {
            eprintln!("corral: reading the config from standard input (end it with Ctrl-D)");
        }
        let mut text = String::new();
        std::io::stdin()
            .take(corral::client::MAX_CONFIG_TEXT as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| Error::Invalid(format!("cannot read the config from stdin: {e}")))?;
        if text.len() > corral::client::MAX_CONFIG_TEXT {
            return Err(Error::Invalid(format!(
                "stdin: a config larger than {} MiB",
                corral::client::MAX_CONFIG_TEXT >> 20
            )));
        }
        let apps = corral::client::read_config_text(&text, "stdin")?;
        return Ok((apps, here, "stdin".to_string()));
    }
    let path = Path::new(what);
    let apps = corral::client::read_config(path)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => here.join(p),
        _ => here,
    };
    Ok((apps, dir, what.to_string()))
}

/// Whether `word` names a known app (by name or pm_id).
fn known(c: &mut Client, word: &str) -> bool {
    c.describe(Target::from(word))
        .map(|d| !d.is_empty())
        .unwrap_or(false)
}

/// The app options given as flags, under their option keys.
fn app_options(m: &Matches, extra: &[String]) -> Result<Map<String, Value>, String> {
    let mut o = Map::new();
    let strings = [
        ("name", "name"),
        ("namespace", "namespace"),
        ("interpreter", "interpreter"),
        ("cwd", "cwd"),
        ("output", "output"),
        ("error", "error"),
        ("log-date-format", "log_date_format"),
        ("pid", "pid_file"),
        ("min-uptime", "min_uptime"),
        ("max-restarts", "max_restarts"),
        ("kill-timeout", "kill_timeout"),
        ("kill-signal", "kill_signal"),
        ("restart-delay", "restart_delay"),
        ("uid", "uid"),
        ("gid", "gid"),
        ("max-memory-restart", "max_memory_restart"),
        ("exp-backoff-restart-delay", "exp_backoff_restart_delay"),
        ("min-restart-interval", "min_restart_interval"),
        ("watch-delay", "watch_delay"),
        ("instance-var", "instance_var"),
        ("listen-timeout", "listen_timeout"),
        ("log-type", "log_type"),
        ("max-log-size", "max_log_size"),
        ("log-retain", "log_retain"),
    ];
    for (flag, key) in strings {
        if let Some(v) = m.opt_str(flag) {
            o.insert(key.into(), json!(v));
        }
    }
    match (m.opt_str("cron-restart"), m.opt_str("cron")) {
        (Some(_), Some(_)) => return Err("give --cron-restart or --cron, not both".into()),
        (Some(c), None) | (None, Some(c)) => {
            o.insert("cron_restart".into(), json!(c));
        }
        (None, None) => {}
    }
    if m.opt_present("log") {
        let v = m.opt_str("log").map_or(json!(true), |p| json!(p));
        o.insert("log_file".into(), v);
    }
    if let Some(list) = m.opt_str("ignore-watch") {
        let names: Vec<&str> = list.split_whitespace().collect();
        o.insert("ignore_watch".into(), json!(names));
    }
    match (m.opt_str("interpreter-args"), m.opt_str("node-args")) {
        (Some(_), Some(_)) => {
            return Err("give --interpreter-args or --node-args, not both".into());
        }
        (Some(a), None) | (None, Some(a)) => {
            o.insert("interpreter_args".into(), json!(a));
        }
        (None, None) => {}
    }
    let switches = [
        ("time", "time", true),
        ("no-autorestart", "autorestart", false),
        ("no-autostart", "autostart", false),
        ("force", "force", true),
        ("no-treekill", "treekill", false),
        ("execute-command", "execute_command", true),
        ("write", "write", true),
        ("watch", "watch", true),
        ("merge-logs", "merge_logs", true),
        ("disable-logs", "disable_logs", true),
        ("wait-ready", "wait_ready", true),
        ("shutdown-with-message", "shutdown_with_message", true),
        ("no-ipc", "ipc", false),
        ("source-map-support", "source_map_support", true),
        (
            "disable-source-map-support",
            "disable_source_map_support",
            true,
        ),
    ];
    for (flag, key, value) in switches {
        if m.opt_present(flag) {
            o.insert(key.into(), json!(value));
        }
    }
    if let Some(n) = m.opt_str("instances") {
        let n = match n.as_str() {
            "max" => json!("max"),
            n => json!(
                n.parse::<i64>()
                    .map_err(|_| { format!("--instances: expected a number or max, got {n}") })?
            ),
        };
        // As in PM2, the mode follows: cluster for a Node app, fork for
        // others or with -x (options::parse_app decides).
        o.insert("instances".into(), n);
    }
    if let Some(codes) = m.opt_str("stop-exit-codes") {
        let codes: Result<Vec<i64>, _> =
            codes.split(',').map(|c| c.trim().parse::<i64>()).collect();
        let codes = codes
            .map_err(|_| "--stop-exit-codes: expected numbers separated by commas".to_string())?;
        o.insert("stop_exit_codes".into(), json!(codes));
    }
    if !extra.is_empty() {
        o.insert("args".into(), json!(extra));
    }
    Ok(o)
}

/// The single target of an action verb.
fn one_target(verb: &str, m: &Matches) -> Result<Target, i32> {
    match m.free.as_slice() {
        [t] => Ok(Target::from(t)),
        [] => Err(usage_error(&format!(
            "{verb}: give a name, id, namespace or all"
        ))),
        _ => Err(usage_error(&format!("{verb}: give one target"))),
    }
}

/// The names given to `--only` (comma- or space-separated).
fn only_names(m: &Matches) -> Vec<String> {
    m.opt_str("only")
        .map(|s| {
            s.split([',', ' '])
                .filter(|x| !x.trim().is_empty())
                .map(|x| x.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// One word of a command line as the apps it names, as PM2 reads it: `all`,
/// a pm_id, `/regex/` (tested against each name), a config file (its apps,
/// `--only` applied), a script path (the apps running it), else a name or
/// namespace. `Err` is an exit status, the error printed.
fn resolve_word(c: &mut Client, word: &str, only: &[String]) -> Result<Vec<Target>, i32> {
    if let Some(pattern) = word
        .strip_prefix('/')
        .and_then(|w| w.strip_suffix('/'))
        .filter(|p| !p.is_empty() && !Path::new(word).exists())
    {
        let re = daemon::Regex::new(pattern).map_err(|e| {
            usage_error(&format!(
                "`{word}` is not a regular expression I can read: {e}"
            ))
        })?;
        let all = c.list().map_err(report)?;
        let ids: Vec<Target> = all
            .iter()
            .filter(|d| re.is_match(&d.name))
            .map(|d| Target::Id(d.pm_id))
            .collect();
        if ids.is_empty() {
            eprintln!("corral: no process matches {word}");
            return Err(EXIT_REFUSED);
        }
        return Ok(ids);
    }
    if corral::client::is_config_file(word) && Path::new(word).is_file() {
        let apps = corral::client::read_config(Path::new(word)).map_err(report)?;
        let names = corral::client::config_app_names(&apps, only);
        if names.is_empty() {
            eprintln!("corral: {word}: no app named {}", only.join(", "));
            return Err(EXIT_REFUSED);
        }
        return Ok(names.into_iter().map(Target::Name).collect());
    }
    let path = Path::new(word);
    if word != "all" && word.parse::<u32>().is_err() && path.is_file() {
        // A script: the apps whose script it is.
        let want = std::fs::canonicalize(path).ok();
        let all = c.list().map_err(report)?;
        let ids: Vec<Target> = all
            .iter()
            .filter(|d| {
                let exec = std::fs::canonicalize(&d.pm2_env.pm_exec_path).ok();
                exec.is_some() && exec == want
            })
            .map(|d| Target::Id(d.pm_id))
            .collect();
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
    Ok(vec![Target::from(word)])
}

/// Every word's targets, in order, each once.
fn resolve_words(c: &mut Client, words: &[String], only: &[String]) -> Result<Vec<Target>, i32> {
    let mut out: Vec<Target> = Vec::new();
    for w in words {
        for t in resolve_word(c, w, only)? {
            if !out.contains(&t) {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// On a terminal, a line saying what is being waited for, erased by the
/// guard's drop.
struct Progress(bool);

impl Progress {
    fn show(what: &str) -> Progress {
        let on = std::io::stderr().is_terminal();
        if on {
            eprint!("corral: {what}…");
            let _ = std::io::stderr().flush();
        }
        Progress(on)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.0 {
            eprint!("\r\x1b[K");
        }
    }
}

/// The progress line of an action verb.
fn progress_text(verb: &str, target: &Target) -> String {
    let doing = match verb {
        "stop" => "stopping",
        "restart" => "restarting",
        "reload" | "graceful_reload" => "reloading",
        "delete" => "stopping and deleting",
        _ => "updating",
    };
    format!("{doing} {target} (waiting for it to settle)")
}

/// The restart/reload options given as flags (`Update`), or a usage error.
fn update_of(verb: &str, m: &Matches, extra: &[String]) -> Result<corral::client::Update, i32> {
    let mut u = corral::client::Update::default();
    if verb == "stop" {
        if m.opt_present("watch") {
            u.options.insert("watch".into(), json!(false));
        }
        return Ok(u);
    }
    if !matches!(verb, "restart" | "reload" | "graceful_reload") {
        return Ok(u);
    }
    // Never ignored silently: PM2's batch size has no meaning here.
    if let Some(n) = m.opt_str("parallel") {
        eprintln!("corral: {verb}: --parallel {n}: corral acts on the apps one by one; ignored");
    }
    let mut opts = app_options(m, extra).map_err(|e| usage_error(&format!("{verb}: {e}")))?;
    // As PM2: `restart --watch` toggles watching.
    if opts.remove("watch").is_some() {
        u.toggle_watch = true;
    }
    u.options = opts;
    u.env_name = m.opt_str("env");
    u.update_env = m.opt_present("update-env");
    if u.update_env {
        warn_env_left_out();
    }
    Ok(u)
}

/// Say which variables of this environment the apps will not get: a name
/// or value that is not UTF-8 cannot travel in a request.
fn warn_env_left_out() {
    let (_, left_out) = corral::__private::utf8_env();
    if !left_out.is_empty() {
        eprintln!(
            "corral: warning: not passed to the apps (not UTF-8): {}",
            left_out.join(", ")
        );
    }
}

fn cmd_act(verb: &str, args: &[String]) -> i32 {
    let verb = match verb {
        "gracefulReload" => "graceful_reload",
        v => v,
    };
    let flags_of = match verb {
        "graceful_reload" => "gracefulReload",
        v => v,
    };
    let (m, extra) = match parse(flags_of, args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if m.free.is_empty() {
        return usage_error(&format!(
            "{flags_of}: give a name, id, namespace, script, config file, /regex/ or all"
        ));
    }
    let update = match update_of(verb, &m, &extra) {
        Ok(u) => u,
        Err(code) => return code,
    };
    let only = only_names(&m);
    let json = m.opt_present("json");
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut done: Vec<Description> = Vec::new();
    let mut words = Vec::new();
    for w in &m.free {
        // restart/reload of a config file start what does not run, as PM2.
        // `-`: a config on stdin, as PM2's.
        let is_config = w == "-" || corral::client::is_config_file(w) && Path::new(w).is_file();
        if w == "-" && !matches!(verb, "restart" | "reload" | "graceful_reload") {
            let apps = match read_start_config(w) {
                Ok((apps, _, _)) => apps,
                Err(e) => return report(e),
            };
            let names = corral::client::config_app_names(&apps, &only);
            if names.is_empty() {
                eprintln!("corral: stdin: no app named {}", only.join(", "));
                return EXIT_REFUSED;
            }
            words.extend(names);
        } else if is_config && matches!(verb, "restart" | "reload" | "graceful_reload") {
            let config = match read_start_config(w) {
                Ok(c) => c,
                Err(e) => return report(e),
            };
            match start_or(&mut c, verb, config, &only, &update) {
                Ok(d) => done.extend(d),
                Err(code) => return code,
            }
        } else {
            words.push(w.clone());
        }
    }
    let targets = match resolve_words(&mut c, &words, &only) {
        Ok(t) => t,
        Err(code) => return code,
    };
    for target in targets {
        let all = target == Target::All;
        let r = {
            let _p = Progress::show(&progress_text(verb, &target));
            match verb {
                "stop" | "restart" | "reload" | "graceful_reload" => {
                    c.update(verb, target, &update)
                }
                "delete" => c.delete(target),
                _ => c.reset(target),
            }
        };
        match r {
            Ok(d) if d.is_empty() && all => {
                eprintln!("corral: no process found (the list is empty)");
                return EXIT_REFUSED;
            }
            Ok(d) => done.extend(d),
            Err(e) => return report(e),
        }
    }
    print_warnings(&c);
    show(&mut c, json, &done)
}

/// `restart|reload <config>` and `startOrRestart|Reload|GracefulReload`:
/// the config's apps that run are restarted (reloaded) with its options,
/// the others started, as PM2's `_startJson`.
fn start_or(
    c: &mut Client,
    verb: &str,
    (apps, dir, label): (Vec<Value>, PathBuf, String),
    only: &[String],
    flags: &corral::client::Update,
) -> Result<Vec<Description>, i32> {
    let running: Vec<String> = c
        .list()
        .map_err(report)?
        .into_iter()
        .filter(|d| !matches!(d.pm2_env.status, Status::Stopped | Status::Errored))
        .map(|d| d.name)
        .collect();
    let mut fresh = Vec::new();
    let mut done = Vec::new();
    for app in apps {
        let names = corral::client::config_app_names(std::slice::from_ref(&app), &[]);
        let Some(name) = names.first().cloned() else {
            fresh.push(app);
            continue;
        };
        if !only.is_empty() && !only.contains(&name) {
            continue;
        }
        if !running.contains(&name) {
            fresh.push(app);
            continue;
        }
        let mut options = match app {
            Value::Object(o) => o,
            _ => Map::new(),
        };
        // Paths in a config are relative to its directory.
        let cwd = match options.get("cwd").and_then(Value::as_str) {
            Some(d) => dir.join(d),
            None => dir.clone(),
        };
        options.insert("cwd".into(), json!(cwd.display().to_string()));
        options.extend(flags.options.clone());
        let update = corral::client::Update {
            options,
            env_name: flags.env_name.clone(),
            update_env: flags.update_env,
            toggle_watch: flags.toggle_watch,
            from_config: true,
        };
        let _p = Progress::show(&progress_text(verb, &Target::Name(name.clone())));
        done.extend(
            c.update(verb, Target::Name(name), &update)
                .map_err(report)?,
        );
    }
    if !fresh.is_empty() {
        let _p = Progress::show(&format!("starting the apps of {label}"));
        let d = c
            .start_config(fresh, &dir, &label, flags.env_name.as_deref(), only)
            .map_err(report)?;
        done.extend(d);
    }
    Ok(done)
}

fn cmd_start_or(verb: &str, args: &[String]) -> i32 {
    let (m, _) = match parse(verb, args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    warn_env_left_out();
    let [file] = m.free.as_slice() else {
        return usage_error(&format!("{verb}: give one config file"));
    };
    let action = match verb {
        "startOrRestart" => "restart",
        "startOrReload" => "reload",
        _ => "graceful_reload",
    };
    let update = corral::client::Update {
        env_name: m.opt_str("env"),
        update_env: m.opt_present("update-env"),
        ..Default::default()
    };
    if !corral::client::is_config_file(file) && file != "-" {
        return usage_error(&format!("{verb}: {file} is not a config file"));
    }
    let config = match read_start_config(file) {
        Ok(c) => c,
        Err(e) => return report(e),
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match start_or(&mut c, action, config, &only_names(&m), &update) {
        Ok(d) => {
            print_warnings(&c);
            show(&mut c, m.opt_present("json"), &d)
        }
        Err(code) => code,
    }
}

fn cmd_prettylist(args: &[String]) -> i32 {
    if let Err(code) = parse("prettylist", args) {
        return code;
    }
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.list_json() {
        Ok(raw) => {
            let v: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or(raw));
            0
        }
        Err(e) => report(e),
    }
}

/// The apps of one target word; "no process" is an error.
fn described(c: &mut Client, word: &str) -> Result<Vec<Description>, i32> {
    let mut out = Vec::new();
    for t in resolve_word(c, word, &[])? {
        out.extend(c.describe(t).map_err(report)?);
    }
    if out.is_empty() {
        eprintln!("corral: no process named {word}");
        return Err(EXIT_REFUSED);
    }
    Ok(out)
}

fn cmd_env(args: &[String]) -> i32 {
    let (m, _) = match parse("env", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let [id] = m.free.as_slice() else {
        return usage_error("env: give a pm_id");
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let descs = match described(&mut c, id) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if m.opt_present("json") {
        let envs: Vec<&BTreeMap<String, String>> = descs.iter().map(|d| &d.pm2_env.env).collect();
        println!("{}", json!(envs));
        return 0;
    }
    let colour = colour_on();
    for d in &descs {
        for (k, v) in &d.pm2_env.env {
            match colour {
                true => println!("{k}: \x1b[32m{v}\x1b[0m"),
                false => println!("{k}: {v}"),
            }
        }
    }
    0
}

fn cmd_id(args: &[String]) -> i32 {
    let (m, _) = match parse("id", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let [name] = m.free.as_slice() else {
        return usage_error("id: give an app name");
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // As PM2: the ids of that name, an empty array when there are none.
    match c.list() {
        Ok(all) => {
            let ids: Vec<u32> = all
                .iter()
                .filter(|d| &d.name == name)
                .map(|d| d.pm_id)
                .collect();
            println!("{}", json!(ids));
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_pid(args: &[String]) -> i32 {
    let (m, _) = match parse("pid", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let descs = match m.free.as_slice() {
        [] => match c.list() {
            Ok(d) => d,
            Err(e) => return report(e),
        },
        [t] => match described(&mut c, t) {
            Ok(d) => d,
            Err(code) => return code,
        },
        _ => return usage_error("pid: give at most one target"),
    };
    if m.opt_present("json") {
        let pids: Vec<i32> = descs.iter().map(|d| d.pid).collect();
        println!("{}", json!(pids));
        return 0;
    }
    for d in &descs {
        println!("{}", d.pid);
    }
    0
}

fn cmd_list(args: &[String], json: bool) -> i32 {
    let (m, _) = match parse("list", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !m.free.is_empty() {
        return usage_error("list takes no argument");
    }
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if json || m.opt_present("json") {
        // Passed through as the daemon writes it, straight to fd 1 (the
        // line writer of `stdout()` would look through every chunk for a
        // newline).
        let stdout = match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) => {
                eprintln!("corral: cannot write to the standard output: {e}");
                return EXIT_REFUSED;
            }
        };
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout);
        let written = c.write_list_json(&mut out);
        return match written.and_then(|()| out.flush().map_err(Error::Io)) {
            Ok(()) => 0,
            Err(e) => report(e),
        };
    }
    print_table(&mut c)
}

fn cmd_describe(args: &[String]) -> i32 {
    let (m, _) = match parse("describe", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let target = match one_target("describe", &m) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.describe(target.clone()) {
        Ok(d) if m.opt_present("json") => {
            println!("{}", serde_json::to_string(&d).unwrap_or_default());
            0
        }
        Ok(d) if d.is_empty() => {
            eprintln!("corral: no process named {target}");
            EXIT_REFUSED
        }
        Ok(d) => {
            for x in &d {
                print!("{}", describe_text(x));
            }
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_signal(args: &[String]) -> i32 {
    let (m, _) = match parse("signal", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let [sig, target] = m.free.as_slice() else {
        return usage_error("signal: give a signal and a target");
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.send_signal_to_process_name(sig, target) {
        Ok(d) if m.opt_present("json") => {
            println!("{}", serde_json::to_string(&d).unwrap_or_default());
            0
        }
        Ok(d) => {
            for x in &d {
                println!("sent {sig} to {} ({}), pid {}", x.name, x.pm_id, x.pid);
            }
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_scale(args: &[String]) -> i32 {
    // `-2` is a count here, not a flag.
    let is_count = |a: &String| {
        let digits = a.strip_prefix(['+', '-']).unwrap_or(a);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let flags: Vec<String> = args.iter().filter(|a| !is_count(a)).cloned().collect();
    let (m, _) = match parse("scale", &flags) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut free = m.free.clone();
    free.extend(args.iter().filter(|a| is_count(a)).cloned());
    let [name, n] = free.as_slice() else {
        return usage_error("scale: give an app name and a number of instances");
    };
    let valid = n.trim_start_matches(['+', '-']).parse::<u32>().is_ok();
    if !valid {
        return usage_error(&format!("scale: `{n}` is not a number, +N or -N"));
    }
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.scale(name, json!(n)) {
        Ok(descs) => show(&mut c, m.opt_present("json"), &descs),
        Err(e) => report(e),
    }
}

fn cmd_flush(args: &[String]) -> i32 {
    let (m, _) = match parse("flush", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let target = match m.free.as_slice() {
        [] => None,
        [t] => Some(Target::from(t)),
        _ => return usage_error("flush: give at most one target"),
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.flush(target) {
        Ok(n) if m.opt_present("json") => {
            println!("{}", json!({ "files": n }));
            0
        }
        Ok(n) => {
            println!("emptied {n} log files");
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_reload_logs(args: &[String]) -> i32 {
    let (m, _) = match parse("reload-logs", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !m.free.is_empty() {
        return usage_error("reload-logs takes no argument");
    }
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rotate = m.opt_present("rotate");
    let done = match rotate {
        true => c.reload_logs_rotate(),
        false => c.reload_logs(),
    };
    match done {
        Ok(n) if m.opt_present("json") => {
            println!("{}", json!({ "files": n }));
            0
        }
        Ok(n) if rotate => {
            println!("rotated {n} log files");
            0
        }
        Ok(n) => {
            println!("reopened {n} log files");
            0
        }
        Err(e) => report(e),
    }
}

/// `dump` / `save`: the daemon writes its list to the dump file.
fn cmd_dump(args: &[String]) -> i32 {
    let (m, _) = match parse("dump", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !m.free.is_empty() {
        return usage_error(
            "dump takes no argument (the file is $DUMP_FILE_PATH or the home's dump.json)",
        );
    }
    // No daemon, nothing to save: never launch one just to save its empty list.
    let mut c = match connect(false) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.dump(m.opt_present("force")) {
        Ok(d) if m.opt_present("json") => {
            println!(
                "{}",
                json!({"path": d.path.display().to_string(), "count": d.count})
            );
            0
        }
        Ok(d) => {
            println!("saved {} apps to {}", d.count, d.path.display());
            0
        }
        Err(e) => report(e),
    }
}

/// `resurrect [--from FILE]`: bring back the saved apps not in the list.
fn cmd_resurrect(args: &[String]) -> i32 {
    let (m, _) = match parse("resurrect", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !m.free.is_empty() {
        return usage_error("resurrect takes no argument (use --from FILE for another dump)");
    }
    let json = m.opt_present("json");
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match m.opt_str("from") {
        Some(f) => c.resurrect_from(Path::new(&f)),
        None => c.resurrect(),
    };
    print_warnings(&c);
    match result {
        Ok(descs) => {
            if !json {
                println!("brought back {} apps", descs.len());
            }
            show(&mut c, json, &descs)
        }
        Err(e) => report(e),
    }
}

/// `send <pm_id> <line>`: the line (and a newline) to the app's stdin, as
/// PM2's `sendLineToStdin`.
fn cmd_send(args: &[String]) -> i32 {
    let (m, _) = match parse("send", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (id, words) = match m.free.split_first() {
        Some((id, words)) if !words.is_empty() => (id, words),
        _ => return usage_error("send: give a pm_id and a line"),
    };
    let Ok(id) = id.parse::<u32>() else {
        return usage_error(&format!("send: `{id}` is not a pm_id"));
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.send_line_to_stdin(id, &words.join(" ")) {
        Ok(()) => 0,
        Err(e) => report(e),
    }
}

/// `msg <pm_id> <json>`: a message to the app's IPC channel.
fn cmd_msg(args: &[String]) -> i32 {
    let (m, _) = match parse("msg", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let [id, data] = m.free.as_slice() else {
        return usage_error("msg: give a pm_id and a JSON value");
    };
    let Ok(id) = id.parse::<u32>() else {
        return usage_error(&format!("msg: `{id}` is not a pm_id"));
    };
    let data: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return usage_error(&format!("msg: the message is not JSON: {e}")),
    };
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.send_data_to_process_id(id, m.opt_str("topic").as_deref(), data) {
        Ok(()) => 0,
        Err(e) => report(e),
    }
}

fn cmd_bus(args: &[String]) -> i32 {
    let (m, _) = match parse("bus", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !m.free.is_empty() {
        return usage_error("bus takes no argument");
    }
    let events = m
        .opt_str("events")
        .map(|e| e.split(',').map(|x| x.trim().to_string()).collect());
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let bus = match c.launch_bus(events) {
        Ok(b) => b,
        Err(e) => return report(e),
    };
    let mut bus = bus;
    let mut out = std::io::stdout().lock();
    while let Some(line) = bus.next_line() {
        match line {
            Ok(line) => {
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return 0;
                }
            }
            Err(e) => return report(e),
        }
    }
    0
}

/// ANSI colours given to apps by pm_id in `logs`.
const APP_COLOURS: [&str; 6] = ["36", "32", "35", "33", "34", "31"];

fn cmd_logs(args: &[String]) -> i32 {
    let (m, _) = match parse("logs", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let target = match m.free.as_slice() {
        [] => Target::All,
        [t] => Target::from(t),
        _ => return usage_error("logs: give at most one target"),
    };
    let lines = match m.opt_str("lines").map(|n| n.parse::<usize>()) {
        None => 15,
        Some(Ok(n)) => n,
        Some(Err(_)) => return usage_error("logs: --lines takes a number"),
    };
    if m.opt_present("out") && m.opt_present("err") {
        return usage_error("logs: give --out or --err, not both");
    }
    let (want_out, want_err) = (!m.opt_present("err"), !m.opt_present("out"));
    let raw = m.opt_present("raw");
    let colour = colour_on() && !raw;
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let apps = match c.describe(target.clone()) {
        Ok(a) => a,
        Err(e) => return report(e),
    };
    if apps.is_empty() && target != Target::All {
        eprintln!("corral: no process named {target}");
        return EXIT_REFUSED;
    }
    let prefix = |pm_id: u32, name: &str| -> String {
        if raw {
            return String::new();
        }
        let p = format!("{pm_id}|{name}| ");
        match colour {
            true => format!(
                "\x1b[{}m{p}\x1b[0m",
                APP_COLOURS
                    .get(pm_id as usize % APP_COLOURS.len())
                    .unwrap_or(&"0")
            ),
            false => p,
        }
    };
    let mut out = std::io::stdout().lock();
    // PM2's --json and --format only follow.
    let shape = match (m.opt_present("json"), m.opt_present("format")) {
        (true, true) => return usage_error("logs: give --json or --format, not both"),
        (true, false) => Shape::Json,
        (false, true) => Shape::Format,
        (false, false) => Shape::Text,
    };
    let nostream = m.opt_present("nostream");
    // Each file once, even when out and err are the same file.
    let mut seen = std::collections::BTreeSet::new();
    for d in apps.iter().filter(|_| shape == Shape::Text || nostream) {
        let e = &d.pm2_env;
        let files = [
            (want_out, &e.pm_out_log_path),
            (want_err, &e.pm_err_log_path),
        ];
        for (wanted, path) in files {
            if !wanted || path == "/dev/null" || !seen.insert(path.clone()) {
                continue;
            }
            let tail = match corral::__private::last_lines(Path::new(path), lines) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    eprintln!("corral: cannot read {path}: {e}");
                    continue;
                }
            };
            if !raw {
                let _ = writeln!(out, "{path} last {lines} lines:");
            }
            for l in tail {
                let _ = writeln!(out, "{}{l}", prefix(d.pm_id, &d.name));
            }
        }
    }
    let _ = out.flush();
    if nostream {
        return 0;
    }
    let ids: Vec<u32> = apps.iter().map(|d| d.pm_id).collect();
    let mut names = match (want_out, want_err) {
        (true, false) => vec!["log:out".to_string()],
        (false, true) => vec!["log:err".to_string()],
        _ => vec!["log:*".to_string()],
    };
    if shape == Shape::Json {
        names.push("process:event".into());
    }
    let bus = match c.launch_bus(Some(names)) {
        Ok(b) => b,
        Err(e) => return report(e),
    };
    let stamp = match m.opt_str("timestamp") {
        Some(f) => Some(corral::__private::Format::parse(&f)),
        None if m.opt_present("timestamp") => {
            Some(corral::__private::Format::parse(LOGS_TIMESTAMP_FORMAT))
        }
        None => None,
    };
    let render = |f: &corral::__private::Format, at: u64| {
        let mut buf = Vec::new();
        f.render(&corral::__private::local_tm(at as i64), at as i64, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    let iso = |at: u64| {
        let mut buf = Vec::new();
        let f = corral::__private::Format::parse("YYYY-MM-DDTHH:mm:ss.SSS[Z]");
        f.render(&corral::__private::utc_tm(at as i64), at as i64, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    };
    let format_stamp = corral::__private::Format::parse("YYYY-MM-DD-HH:mm:ssZZ");
    for ev in bus {
        let text = match ev {
            Ok(Event::Log {
                process,
                line,
                at,
                stream,
            }) => {
                // A target of all follows apps started later too.
                if target != Target::All && !ids.contains(&process.pm_id) {
                    continue;
                }
                let kind = match stream {
                    corral::protocol::LogStream::Out => "out",
                    corral::protocol::LogStream::Err => "err",
                };
                let bare = line.strip_suffix('\n').unwrap_or(&line);
                match shape {
                    Shape::Json => json!({
                        "message": line,
                        "timestamp": iso(at),
                        "type": kind,
                        "process_id": process.pm_id,
                        "app_name": process.name,
                    })
                    .to_string(),
                    Shape::Format => format!(
                        "timestamp={} app={} id={} type={} message={bare}",
                        render(&format_stamp, at),
                        process.name,
                        process.pm_id,
                        if kind == "err" { "error" } else { "out" },
                    ),
                    Shape::Text => {
                        let mut text = String::new();
                        // As PM2: --raw prints the line only.
                        if let Some(f) = stamp.as_ref().filter(|_| !raw) {
                            text.push_str(&render(f, at));
                            text.push(' ');
                        }
                        text.push_str(&prefix(process.pm_id, &process.name));
                        text.push_str(bare);
                        text
                    }
                }
            }
            Ok(Event::Process {
                kind, process, at, ..
            }) if shape == Shape::Json => {
                if target != Target::All && !ids.contains(&process.pm_id) {
                    continue;
                }
                json!({
                    "timestamp": iso(at),
                    "type": "process_event",
                    "status": kind,
                    "app_name": process.name,
                })
                .to_string()
            }
            _ => continue,
        };
        if writeln!(out, "{text}").is_err() {
            return 0;
        }
        let _ = out.flush();
    }
    0
}

/// How `logs` prints followed lines.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    /// PM2's `--json`.
    Json,
    /// PM2's `--format`.
    Format,
}

/// PM2's format for `logs --timestamp` without one.
const LOGS_TIMESTAMP_FORMAT: &str = "YYYY-MM-DD-HH:mm:ss";

/// The file `corral ecosystem` writes, as PM2's verb does.
const ECOSYSTEM_FILE: &str = "ecosystem.config.js";

/// What `corral ecosystem` writes: a config that corral and PM2 both read.
const ECOSYSTEM_SAMPLE: &str = r#"// The apps to run: `corral start ecosystem.config.js [--env production]`.
// corral evaluates this file with node, as PM2 does; `man corral` lists
// every option. Paths are relative to this file's directory.
module.exports = {
  apps: [
    {
      name: 'app',
      script: 'index.js',
      // args: '--port 3000',
      // instances: 'max', // one per CPU, in cluster mode
      watch: false,
      max_memory_restart: '1G',
      env: {
        NODE_ENV: 'development',
      },
      env_production: {
        NODE_ENV: 'production',
      },
    },
  ],
};
"#;

/// `corral ecosystem simple`: one app, nothing else.
const ECOSYSTEM_SAMPLE_SIMPLE: &str = r#"module.exports = {
  apps: [
    {
      name: 'app',
      script: 'index.js',
    },
  ],
};
"#;

/// Write a sample config in the current directory. Unlike PM2, an existing
/// file is kept unless `--force` says otherwise.
fn cmd_ecosystem(args: &[String]) -> i32 {
    let (m, _) = match parse("ecosystem", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let sample = match m.free.as_slice() {
        [] => ECOSYSTEM_SAMPLE,
        [mode] if mode == "simple" => ECOSYSTEM_SAMPLE_SIMPLE,
        _ => return usage_error("ecosystem: the only mode is `simple`"),
    };
    let path = match std::env::current_dir() {
        Ok(dir) => dir.join(ECOSYSTEM_FILE),
        Err(e) => {
            eprintln!("corral: cannot read the current directory: {e}");
            return EXIT_REFUSED;
        }
    };
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if m.opt_present("force") {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    let written = open
        .open(&path)
        .and_then(|mut f| f.write_all(sample.as_bytes()));
    match written {
        Ok(()) => {
            println!("File {} generated", path.display());
            0
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "corral: {} already exists (--force to replace it)",
                path.display()
            );
            EXIT_REFUSED
        }
        Err(e) => {
            eprintln!("corral: cannot write {}: {e}", path.display());
            EXIT_REFUSED
        }
    }
}

fn cmd_ping(args: &[String]) -> i32 {
    if let Err(code) = parse("ping", args) {
        return code;
    }
    let mut c = match connect(true) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match c.ping() {
        Ok(v) => {
            println!("{v}");
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_kill(args: &[String]) -> i32 {
    let (m, _) = match parse("kill", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let json = m.opt_present("json");
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => return report(e),
    };
    let c = match Client::connect_with(&paths, false) {
        Ok(c) => c,
        Err(Error::NoDaemon(_)) => {
            if json {
                println!("{}", json!({"stopped": 0, "running": false}));
            }
            eprintln!("corral: no daemon is running (nothing to kill)");
            return EXIT_NO_DAEMON;
        }
        Err(e) => return report(e),
    };
    match c.kill_daemon() {
        Ok(n) if json => {
            println!("{}", json!({"stopped": n, "running": true}));
            0
        }
        Ok(n) => {
            println!("daemon stopped ({n} apps stopped)");
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_update(args: &[String]) -> i32 {
    let (m, _) = match parse("update", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !m.free.is_empty() {
        return usage_error("update takes no argument");
    }
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => return report(e),
    };
    let mut c = match Client::connect_with(&paths, false) {
        Ok(c) => c,
        Err(Error::NoDaemon(_)) => {
            eprintln!("corral: no daemon is running (nothing to update)");
            return EXIT_NO_DAEMON;
        }
        Err(e) => return report(e),
    };
    match c.update_daemon() {
        Ok(v) if m.opt_present("json") => {
            println!("{v}");
            0
        }
        Ok(v) => {
            println!(
                "daemon updated to {} (pid {}, {} apps kept, {} ms)",
                v.get("version").and_then(Value::as_str).unwrap_or("?"),
                v.get("pid").and_then(Value::as_u64).unwrap_or(0),
                v.get("apps").and_then(Value::as_u64).unwrap_or(0),
                v.get("took_ms").and_then(Value::as_u64).unwrap_or(0),
            );
            0
        }
        Err(e) => report(e),
    }
}

fn cmd_help(args: &[String]) -> i32 {
    match args {
        [] => {
            print!("{}", general_help());
            0
        }
        [verb] => match find_verb(verb) {
            Some(v) => {
                print!("{}", verb_help(v));
                0
            }
            None => usage_error(&unknown_verb(verb)),
        },
        _ => usage_error("help: give at most one verb"),
    }
}

#[inline(never)]
fn cmd_daemon(args: &[String]) -> i32 {
    let (m, _) = match parse("daemon", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if !m.free.is_empty() {
        return usage_error("daemon takes no argument");
    }
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => return report(e),
    };
    let sample_interval = match m.opt_str("sample-interval") {
        None => corral::__private::DEFAULT_INTERVAL,
        Some(v) => match corral::__private::parse_duration(&json!(v)) {
            Ok(ms) if ms >= corral::__private::MIN_INTERVAL => ms,
            Ok(_) => {
                return usage_error(&format!(
                    "daemon: --sample-interval must be at least {} ms",
                    corral::__private::MIN_INTERVAL
                ));
            }
            Err(e) => return usage_error(&format!("daemon: --sample-interval: {e}")),
        },
    };
    let max_log_size = match m.opt_str("max-log-size") {
        None => None,
        Some(v) => match corral::__private::parse_size(&json!(v)) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(e) => return usage_error(&format!("daemon: --max-log-size: {e}")),
        },
    };
    let log_retain = match m.opt_str("log-retain").map(|v| v.parse::<u32>()) {
        None => corral::__private::DEFAULT_RETAIN,
        Some(Ok(n)) => n,
        Some(Err(_)) => return usage_error("daemon: --log-retain takes a number"),
    };
    let (allow_uid, allow_gid) = match (allowed_ids(&m, true), allowed_ids(&m, false)) {
        (Ok(u), Ok(g)) => (u, g),
        (Err(e), _) | (_, Err(e)) => return usage_error(&format!("daemon: {e}")),
    };
    let cfg = |ready, detach_stdio, lifeline| daemon::Config {
        allow_uid: allow_uid.clone(),
        allow_gid: allow_gid.clone(),
        runtime: None,
        handover: m.opt_str("handover").map(PathBuf::from),
        home: paths.home.clone(),
        socket: paths.socket.clone(),
        ready,
        detach_stdio,
        lifeline,
        sample_interval,
        max_log_size,
        log_retain,
    };
    if m.opt_present("lifeline") {
        // A daemon of connect_no_daemon: says ready on stdout, lives as long
        // as stdin stays open.
        // Stdout, duplicated so the daemon owns a separate descriptor.
        let ready = daemon::dup_cloexec(1, 3).ok().map(std::fs::File::from);
        return daemon::run(cfg(ready, true, true));
    }
    if m.opt_present("no-daemon") {
        return daemon::run(cfg(None, false, false));
    }
    background(cfg)
}

/// The values of `--allow-uid` (`users`) or `--allow-gid`: numbers, or
/// names looked up now in /etc/passwd or /etc/group.
fn allowed_ids(m: &Matches, users: bool) -> Result<Vec<u32>, String> {
    let opt = if users { "allow-uid" } else { "allow-gid" };
    let mut ids = Vec::new();
    for v in m.opt_strs(opt) {
        let id = match v.parse::<u32>() {
            Ok(n) => n,
            Err(_) if users => corral::__private::lookup(Some(&v), None)
                .ok()
                .and_then(|c| c.uid)
                .ok_or_else(|| format!("--{opt} {v}: no such user"))?,
            Err(_) => corral::__private::lookup(None, Some(&v))
                .map(|c| c.gid)
                .map_err(|_| format!("--{opt} {v}: no such group"))?,
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// The states `wait` knows, and what each accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaitFor {
    /// Every matching app online (for `wait_ready` apps that already means
    /// ready); at least one.
    Online,
    /// Every matching app stopped or errored (not running, and the daemon
    /// will not start it again by itself); at least one.
    Stopped,
    /// No app matches.
    Gone,
}

impl WaitFor {
    fn parse(word: &str) -> Option<WaitFor> {
        match word {
            "online" | "ready" => Some(WaitFor::Online),
            "stopped" => Some(WaitFor::Stopped),
            "gone" => Some(WaitFor::Gone),
            _ => None,
        }
    }

    fn reached(self, seen: &[Description]) -> bool {
        match self {
            WaitFor::Gone => seen.is_empty(),
            WaitFor::Online => {
                !seen.is_empty() && seen.iter().all(|d| d.pm2_env.status == Status::Online)
            }
            WaitFor::Stopped => {
                !seen.is_empty()
                    && seen
                        .iter()
                        .all(|d| matches!(d.pm2_env.status, Status::Stopped | Status::Errored))
            }
        }
    }
}

/// What `wait` saw last, for its timeout message.
fn seen_text(seen: &[Description]) -> String {
    if seen.is_empty() {
        return "no such app".into();
    }
    seen.iter()
        .map(|d| format!("{} ({}) {}", d.name, d.pm_id, d.pm2_env.status.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `wait`: subscribe to the bus first, then describe the target, and again
/// after each process event, until the state is reached or the deadline
/// passes (a read timeout on the bus socket: no polling).
fn cmd_wait(args: &[String]) -> i32 {
    let (m, _) = match parse("wait", args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let [target, state] = m.free.as_slice() else {
        return usage_error("wait: give a target and a state (online, ready, stopped or gone)");
    };
    let Some(want) = WaitFor::parse(state) else {
        return usage_error(&format!(
            "wait: unknown state `{state}`: give online, ready, stopped or gone"
        ));
    };
    let timeout_text = m.opt_str("timeout").unwrap_or_else(|| "10s".into());
    let timeout = match daemon::parse_duration(&json!(timeout_text)) {
        Ok(ms) => Duration::from_millis(ms),
        Err(e) => return usage_error(&format!("wait: --timeout: {e}")),
    };
    let deadline = Instant::now() + timeout;
    let target = Target::from(target.as_str());
    let mut c = match connect(false) {
        Ok(c) => c,
        // No daemon, no app.
        Err(_) if want == WaitFor::Gone => return 0,
        Err(code) => return code,
    };
    let events = vec!["process:event".to_string(), "daemon:kill".to_string()];
    let mut bus = match c.launch_bus(Some(events)) {
        Ok(b) => b,
        Err(Error::Io(_) | Error::NoDaemon(_)) if want == WaitFor::Gone => return 0,
        Err(e) => return report(e),
    };
    loop {
        let seen = match c.describe(target.clone()) {
            Ok(d) => d,
            Err(_) if want == WaitFor::Gone => return 0,
            Err(e) => return report(e),
        };
        if want.reached(&seen) {
            return 0;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = left.is_zero()
            || match bus.next_timeout(left) {
                Ok(Some(_)) => false,
                Ok(None) => true,
                // An event this build cannot read still means: look again.
                Err(Error::Invalid(_)) => false,
                Err(Error::Closed) if want == WaitFor::Gone => return 0,
                Err(Error::Closed) => {
                    eprintln!(
                        "corral: wait: the daemon exited before {target} was {state}; last seen: {}",
                        seen_text(&seen)
                    );
                    return EXIT_NO_DAEMON;
                }
                Err(e) => return report(e),
            };
        if timed_out {
            // One last look: the state may have come with no event.
            let seen = c.describe(target.clone()).unwrap_or(seen);
            if want.reached(&seen) {
                return 0;
            }
            eprintln!(
                "corral: wait: {target} not {state} after {timeout_text}; saw: {}",
                seen_text(&seen)
            );
            return EXIT_REFUSED;
        }
    }
}

/// The name of the user running this (from /etc/passwd, else `$USER`).
fn current_user() -> Option<String> {
    let uid = nix::unistd::geteuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            daemon::parse_passwd(&t)
                .into_iter()
                .find(|u| u.uid == uid)
                .map(|u| u.name)
        })
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
}

/// A user's home directory from /etc/passwd.
fn home_of(user: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    daemon::parse_passwd(&text)
        .into_iter()
        .find(|u| u.name == user)
        .map(|u| u.home)
}

/// `startup` / `unstartup`: work out the unit (pure, in `corral::startup`),
/// then print it (`--dry-run`), print the sudo command (not root), or write
/// and enable it / disable and remove it.
fn cmd_startup(verb: &str, args: &[String]) -> i32 {
    use daemon::startup::{self, Init, Plan, Saved, SysvTool, Unit};
    use std::path::PathBuf;
    let (m, _) = match parse(verb, args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let platform = match m.free.as_slice() {
        [] => None,
        [p] => Some(p.clone()),
        _ => return usage_error(&format!("{verb}: give at most one platform")),
    };
    let root: Option<PathBuf> = std::env::var_os(startup::ROOT_ENV)
        .filter(|r| !r.is_empty())
        .map(PathBuf::from);
    let exists = |p: &str| startup::rooted(root.as_deref(), &Path::new("/").join(p)).exists();
    let init = match platform {
        Some(name) => match Init::from_name(&name) {
            Ok(i) => {
                // As PM2 does: say so when the box seems to run another.
                if let Some(d) = Init::detect(&exists).filter(|d| *d != i) {
                    eprintln!(
                        "corral: {verb}: note: this system seems to run {}, not {}",
                        d.name(),
                        i.name()
                    );
                }
                i
            }
            Err(e) => return usage_error(&format!("{verb}: {e}")),
        },
        None => match Init::detect(&exists) {
            Some(i) => i,
            None => {
                return usage_error(&format!(
                    "{verb}: cannot tell this system's init; name it: corral {verb} systemd|openrc|sysv|rcd|launchd"
                ));
            }
        },
    };
    let me = current_user();
    let user = match m.opt_str("user").or_else(|| me.clone()) {
        Some(u) => u,
        None => return usage_error(&format!("{verb}: cannot tell who you are; give -u USER")),
    };
    if let Err(e) = startup::check_user(&user) {
        return usage_error(&format!("{verb}: {e}"));
    }
    let paths = match Paths::from_env() {
        Ok(p) => p,
        Err(e) => return report(e),
    };
    let env_home = std::env::var_os("CORRAL_HOME").filter(|h| !h.is_empty());
    // --hp (PM2's: the user's home) > CORRAL_HOME > the user's own home.
    let home = if let Some(hp) = m.opt_str("hp") {
        if !Path::new(&hp).is_absolute() {
            return usage_error(&format!("{verb}: --hp {hp} is not an absolute path"));
        }
        Path::new(&hp).join(".corral")
    } else if env_home.is_some() || me.as_deref() == Some(user.as_str()) {
        paths.home.clone()
    } else {
        match home_of(&user) {
            Some(h) => Path::new(&h).join(".corral"),
            None => {
                return usage_error(&format!(
                    "{verb}: user `{user}` is not in /etc/passwd; give its home with --hp DIR"
                ));
            }
        }
    };
    let binary = match std::env::current_exe() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("corral: {verb}: cannot find this program's path: {e}");
            return EXIT_REFUSED;
        }
    };
    let unit = Unit {
        user: user.clone(),
        home: home.clone(),
        binary: binary.clone(),
        path_env: std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| startup::DEFAULT_PATH.to_string()),
        service: m.opt_str("service-name"),
        sysv_tool: SysvTool::detect(&exists),
    };
    let plan: Plan = match startup::plan(init, &unit) {
        Ok(p) => p,
        Err(e) => return usage_error(&format!("{verb}: {e}")),
    };
    let file = startup::rooted(root.as_deref(), &plan.file);
    let show = |c: &Vec<String>| startup::show_cmd(c);
    if m.opt_present("dry-run") {
        if verb == "startup" {
            // The unit alone on stdout, so it can be redirected to a file.
            print!("{}", plan.text);
            eprintln!("corral: startup --dry-run: would write {}", file.display());
            for c in &plan.enable {
                eprintln!("corral: startup --dry-run: would run: {}", show(c));
            }
        } else {
            for c in &plan.disable {
                println!("would run: {}", show(c));
            }
            println!("would remove: {}", file.display());
            for c in &plan.after_remove {
                println!("would run: {}", show(c));
            }
        }
        return 0;
    }
    if root.is_none() && !nix::unistd::geteuid().is_root() {
        let mut env = Vec::new();
        let mut flags = Vec::new();
        let home_text = home.to_string_lossy().into_owned();
        // PM2's `--hp $HOME` when the home is the default one, else the
        // home itself.
        let hp = std::env::var("HOME")
            .ok()
            .filter(|h| env_home.is_none() && home == Path::new(h).join(".corral"));
        match &hp {
            Some(h) => flags.extend(["--hp", h.as_str()]),
            None => env.push(("CORRAL_HOME", home_text.as_str())),
        }
        let service = m.opt_str("service-name");
        if let Some(s) = &service {
            flags.extend(["--service-name", s.as_str()]);
        }
        println!(
            "{} needs root ({}). Run:",
            verb,
            if verb == "startup" {
                format!("it writes {}", file.display())
            } else {
                format!("it removes {}", file.display())
            }
        );
        println!(
            "{}",
            startup::sudo_command(&binary, verb, init, &user, &env, &flags)
        );
        return EXIT_REFUSED;
    }
    let run = |c: &Vec<String>| -> Result<(), String> {
        if root.is_some() {
            println!("not run ({} is set): {}", startup::ROOT_ENV, show(c));
            Ok(())
        } else {
            println!("$ {}", show(c));
            startup::run_cmd(c)
        }
    };
    if verb == "unstartup" {
        if !file.exists() {
            println!("no boot unit at {}: nothing to remove", file.display());
            return 0;
        }
        let mut failed = false;
        for c in &plan.disable {
            if let Err(e) = run(c) {
                eprintln!("corral: unstartup: {e}");
                failed = true;
            }
        }
        if let Err(e) = std::fs::remove_file(&file) {
            eprintln!("corral: unstartup: cannot remove {}: {e}", file.display());
            return EXIT_REFUSED;
        }
        println!("removed {}", file.display());
        for c in &plan.after_remove {
            if let Err(e) = run(c) {
                eprintln!("corral: unstartup: {e}");
                failed = true;
            }
        }
        println!("the running daemon and its apps are left as they are");
        return if failed { EXIT_REFUSED } else { 0 };
    }
    println!("platform: {}", init.name());
    if let Err(e) = startup::write_unit(&file, &plan.text, plan.mode) {
        eprintln!("corral: startup: cannot write {}: {e}", file.display());
        return EXIT_REFUSED;
    }
    println!("wrote {}", file.display());
    for c in &plan.enable {
        if let Err(e) = run(c) {
            eprintln!("corral: startup: {e}");
            return EXIT_REFUSED;
        }
    }
    // The user's daemon: the socket of this environment when it is this
    // home, else the home's own.
    let socket = if home == paths.home {
        paths.socket.clone()
    } else {
        home.join("corral.sock")
    };
    match startup::save_list(&socket) {
        Saved::Dumped { path, count } => println!("saved the list ({count} apps) to {path}"),
        Saved::NoDaemon => println!(
            "no daemon runs for {user}: no list saved (start the apps, then run `corral dump`)"
        ),
        Saved::Unsupported => println!(
            "note: this daemon cannot save its list yet (it does not know `dump`): the list was not saved"
        ),
        Saved::Failed(e) => println!("note: the list was not saved: {e}"),
    }
    println!(
        "the {} unit {} starts corral for {user} at boot; remove it with: corral unstartup {} -u {user}",
        init.name(),
        plan.service,
        init.name()
    );
    0
}

/// Fork the daemon into the background, print its first word (`ready` or
/// the error) and exit with 0 or 3.
fn background(cfg: impl Fn(Option<std::fs::File>, bool, bool) -> daemon::Config) -> i32 {
    let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("corral: cannot make a pipe: {e}");
            return EXIT_NO_DAEMON;
        }
    };
    // SAFETY: the process is single-threaded here; the child goes on to run
    // the daemon, the parent only reads the pipe and exits.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("corral: cannot fork the daemon: {e}");
            EXIT_NO_DAEMON
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            daemon::run(cfg(Some(std::fs::File::from(w)), true, false))
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(w);
            let answer = read_with_deadline(r, Duration::from_secs(10));
            let line = answer.lines().next().unwrap_or("").trim().to_string();
            println!(
                "{}",
                if line.is_empty() {
                    "error: the daemon exited"
                } else {
                    &line
                }
            );
            let _ = std::io::stdout().flush();
            if line == "ready" { 0 } else { EXIT_NO_DAEMON }
        }
    }
}

/// What a pipe yields until EOF or the deadline.
fn read_with_deadline(fd: OwnedFd, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut file = std::fs::File::from(fd);
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(buf.get(..n).unwrap_or_default());
                if got.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

// ---- output for people ---------------------------------------------------

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["b", "kb", "mb", "gb"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}b")
    } else {
        format!("{v:.1}{}", UNITS.get(u).unwrap_or(&"gb"))
    }
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}D", s / 86400),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The `list` table.
pub fn table(all: &[Description]) -> String {
    let color = colour_on();
    let head = [
        "id",
        "name",
        "namespace",
        "mode",
        "pid",
        "uptime",
        "restarts",
        "status",
        "cpu",
        "memory",
    ];
    let now = now_ms();
    let rows: Vec<[String; 10]> = all
        .iter()
        .map(|d| {
            let e = &d.pm2_env;
            let online = e.status == Status::Online;
            [
                d.pm_id.to_string(),
                d.name.clone(),
                e.namespace.clone(),
                e.exec_mode.trim_end_matches("_mode").to_string(),
                if d.pid > 0 {
                    d.pid.to_string()
                } else {
                    "-".into()
                },
                if online {
                    human_duration(now.saturating_sub(e.pm_uptime))
                } else {
                    "-".into()
                },
                e.restart_time.to_string(),
                e.status.as_str().to_string(),
                if online {
                    format!("{}%", d.monit.cpu)
                } else {
                    "-".into()
                },
                if online {
                    human_bytes(d.monit.memory)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: &[String], s: &mut String, status_col: Option<&str>| {
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            let pad = " ".repeat(w - c.chars().count());
            let cell = match (i, status_col) {
                (7, Some(code)) => format!("\x1b[{code}m{c}\x1b[0m"),
                // Names bold cyan, as PM2 shows them.
                (1, Some(_)) => format!("\x1b[1;36m{c}\x1b[0m"),
                _ => c.clone(),
            };
            s.push_str(&cell);
            if i + 1 < cells.len() {
                s.push_str(&pad);
                s.push_str("  ");
            }
        }
        s.push('\n');
    };
    let head: Vec<String> = head.iter().map(|h| h.to_string()).collect();
    line(&head, &mut s, None);
    for r in &rows {
        line(r, &mut s, color.then(|| status_colour(&r[7])));
    }
    if all.is_empty() {
        s.push_str("(no apps; start one with: corral start <script>)\n");
    }
    s
}

/// The ANSI colour of a status, as PM2's: online green, stopped and
/// errored red, the passing states yellow.
pub fn status_colour(status: &str) -> &'static str {
    match status {
        "online" => "1;32",
        "errored" => "1;31",
        "stopped" => "31",
        _ => "33",
    }
}

fn describe_text(d: &Description) -> String {
    let e = &d.pm2_env;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut rows: Vec<(&str, String)> = vec![
        ("status", e.status.as_str().to_string()),
        ("name", e.name.clone()),
        ("namespace", e.namespace.clone()),
        ("pm_id", e.pm_id.to_string()),
        (
            "pid",
            if d.pid > 0 {
                d.pid.to_string()
            } else {
                "-".into()
            },
        ),
        ("script", e.pm_exec_path.clone()),
        ("args", e.args.join(" ")),
        ("interpreter", e.exec_interpreter.clone()),
        ("interpreter args", e.node_args.join(" ")),
        ("cwd", e.pm_cwd.clone()),
        ("exec mode", e.exec_mode.clone()),
        ("restarts", e.restart_time.to_string()),
        ("unstable restarts", e.unstable_restarts.to_string()),
        (
            "uptime",
            if e.status == Status::Online {
                human_duration(now_ms().saturating_sub(e.pm_uptime))
            } else {
                "-".into()
            },
        ),
        (
            "last exit",
            match (e.exit_code, &e.exit_signal) {
                (Some(c), _) => format!("code {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "-".into(),
            },
        ),
        ("out log", e.pm_out_log_path.clone()),
        ("error log", e.pm_err_log_path.clone()),
        ("pid file", e.pm_pid_path.clone()),
        ("log lines dropped", e.log_lines_dropped.to_string()),
        ("autorestart", e.autorestart.to_string()),
        ("min uptime", format!("{}ms", e.min_uptime)),
        ("max restarts", e.max_restarts.to_string()),
        ("restart delay", format!("{}ms", e.restart_delay)),
        ("kill signal", e.kill_signal.clone()),
        ("kill timeout", format!("{}ms", e.kill_timeout)),
        ("treekill", e.treekill.to_string()),
        ("log date format", opt(&e.log_date_format)),
        ("memory", human_bytes(d.monit.memory)),
        ("cpu", format!("{}%", d.monit.cpu)),
    ];
    if !e.stop_exit_codes.is_empty() {
        let codes: Vec<String> = e.stop_exit_codes.iter().map(|c| c.to_string()).collect();
        rows.push(("stop exit codes", codes.join(",")));
    }
    let env: BTreeMap<&String, &String> = e.env.iter().collect();
    for (k, v) in env {
        rows.push(("env", format!("{k}={v}")));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut s = format!("── {} ({}) ──\n", e.name, e.pm_id);
    for (k, v) in rows {
        s.push_str(&format!("  {k:<w$}  {v}\n"));
    }
    s
}
