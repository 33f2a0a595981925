#!/usr/bin/env python3
"""corral against PM2 7: the same workloads on both managers, on this machine,
in one run.

    python3 bench/bench.py                 # the full run (~10 min): corral and PM2 7
    python3 bench/bench.py --quick         # smoke mode: corral only, tiny sizes, seconds
    python3 bench/bench.py --no-pm2        # full sizes, corral only
    python3 bench/bench.py --only crash,logs --markdown out.md

Options:
    --quick           corral only, a few apps and one repetition of each
                      workload (the tests run this so the script does not rot)
    --no-pm2          do not install or run PM2
    --corral PATH     the corral binary to measure (default: build the static
                      release binary with scripts/build-static.sh and use it)
    --only LIST       run only these workloads (comma-separated names, below)
    --scale F         multiply every repetition count by F (at least 1 each),
                      and the crash storm's 60 s (at least 3 s); below 1, its
                      300 apps too (at least 10)
    --markdown FILE   also write the results as Markdown to FILE

PM2 is installed from the npm registry (`npm install pm2@7`) into a temporary
prefix, with a temporary npm cache and its own PM2_HOME; corral gets its own
CORRAL_HOME. Nothing of the user's (~/.pm2, ~/.npm, ~/.corral) is read or
written. Every workload starts from a fresh home with no daemon and ends by
stopping the manager; whatever the manager leaves behind is SIGKILLed by pid.
The script makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so
the daemons the managers detach stay its descendants and the final cleanup
(on success, failure, Ctrl-C or SIGTERM) kills every process it started.

Workloads are functions taking a manager (an object with start / stop /
delete / jlist / reload / kill / daemon_pid); adding a manager is a class.
The apps are tiny static C programs compiled here with gcc (`stamp` prints
CLOCK_REALTIME at exec, so times are measured inside the new process), and
a Node http app for the cluster workload. Only 127.0.0.1 is used.
"""

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Builds the static release binary for this host and prints its path last
# (it honours CARGO_TARGET_DIR and the host's own target triple).
BUILD_SCRIPT = os.path.join(ROOT, "scripts", "build-static.sh")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

APPS_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

#if defined(CRASHER)
/* crasher (built with -nostartfiles): exit with status 1 at once, a crash
   loop's app. _start is the whole program, so a crash costs the kernel's
   exec and exit only, not the C library's start-up (which reads the CPU's
   features: about 1 ms under a hypervisor, where each cpuid traps). */
void _start(void) {
    _exit(1);
}
#else
int main(int argc, char **argv) {
    long long t = now_ns();   /* first thing: the moment the process runs */
#if defined(FLOOD)
    /* flood BYTES STAMPFILE: write STAMPFILE "ns pid", then BYTES of
       100-byte lines to stdout in 100 kB writes, then exit. */
    FILE *s = fopen(argv[2], "w");
    fprintf(s, "%lld %d\n", t, (int)getpid());
    fclose(s);
    long long left = atoll(argv[1]);
    static char block[100000];
    for (int i = 0; i < 100000; i += 100) {
        memset(block + i, 'x', 99);
        block[i + 99] = '\n';
    }
    while (left > 0) {
        long long n = left < (long long)sizeof block ? left : (long long)sizeof block;
        ssize_t w = write(1, block, (size_t)n);
        if (w <= 0) return 1;
        left -= w;
    }
    return 0;
#elif defined(SUPERVISOR)
    /* supervisor APP: run APP, and whenever it dies, run it again at once:
       the floor of any manager's crash-restart latency. */
    (void)t;
    for (;;) {
        pid_t p = fork();
        if (p == 0) {
            execl(argv[1], argv[1], (char *)0);
            _exit(127);
        }
        if (p < 0) return 1;
        int st;
        while (waitpid(p, &st, 0) < 0) {}
    }
#elif defined(FORKER)
    /* forker N APP: fork N children that exec APP (output to /dev/null);
       print a line once every one has exec'd (all write ends of a
       close-on-exec pipe are gone), then kill them: the floor of a bulk
       start. */
    (void)t;
    int n = atoi(argv[1]);
    int fd[2];
    if (pipe2(fd, O_CLOEXEC) < 0) return 1;
    pid_t *kids = calloc((size_t)n, sizeof *kids);
    if (!kids) return 1;
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p == 0) {
            int nul = open("/dev/null", O_WRONLY);
            dup2(nul, 1);
            dup2(nul, 2);
            execl(argv[2], argv[2], (char *)0);
            _exit(127);
        }
        if (p < 0) return 1;
        kids[i] = p;
    }
    close(fd[1]);
    char c;
    while (read(fd[0], &c, 1) > 0) {}
    printf("all exec'd\n");
    fflush(stdout);
    for (int i = 0; i < n; i++) kill(kids[i], SIGKILL);
    for (int i = 0; i < n; i++) waitpid(kids[i], NULL, 0);
    return 0;
#else
#  if defined(STUBBORN)
    signal(SIGINT, SIG_IGN);   /* only SIGKILL stops it */
#  endif
    printf("%lld %d\n", t, (int)getpid());
    fflush(stdout);
    for (;;) pause();          /* sleep-like: no CPU, no output */
#endif
}
#endif
"""

CLUSTER_APP = "require('http').createServer((q,s)=>s.end('pid '+process.pid)).listen({port},'127.0.0.1')\n"


# ---------------------------------------------------------------- processes

def set_subreaper():
    """Orphans of our children (the detached daemons and their apps) are
    re-parented to us instead of init, so we can always find and end them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def proc_stat(pid):
    """(state, ppid, utime+stime in ticks, starttime) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[19])


def alive(pid):
    st = proc_stat(pid) if pid else None
    return st is not None and st[0] not in ("Z", "X")


def descendants(root):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                children.setdefault(st[1], []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def reap():
    """Collect zombies re-parented to us (we are their subreaper)."""
    me = os.getpid()
    for pid in descendants(me):
        st = proc_stat(pid)
        if st and st[1] == me and st[0] == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def kill_descendants(grace=0.0):
    """SIGKILL every process we started that is still there, after letting
    them go on their own for `grace` seconds; return the names of those
    killed."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in descendants(os.getpid())):
        reap()
        time.sleep(0.02)
    n = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reap()
        left = [p for p in descendants(os.getpid()) if alive(p)]
        if not left and not descendants(os.getpid()):
            break
        for pid in left:
            if pid not in n:
                n[pid] = comm(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    reap()
    return [f"{name}[{pid}]" for pid, name in n.items()]


def cpu_seconds(pid):
    st = proc_stat(pid)
    return st[2] / CLK_TCK if st else float("nan")


def cpu_ns(pid):
    """CPU time of every thread of `pid` in ns (schedstat: finer than the
    clock ticks of /proc/PID/stat, for a figure of microseconds)."""
    total = 0
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return total


def memory_kib(pid):
    """(RSS, PSS) of one process in KiB; PSS None where smaps is unreadable."""
    rss = pss = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def wait_until(cond, what, limit=30.0, pause=0.0005):
    deadline = time.monotonic() + limit
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(pause)


def stamps(path):
    """The (ns, pid) lines an app wrote at exec."""
    try:
        with open(path) as f:
            return [tuple(int(x) for x in line.split()) for line in f if len(line.split()) == 2]
    except (OSError, ValueError):
        return []


# ---------------------------------------------------------------- managers

class Manager:
    """One process manager under test, with a fresh home per workload."""

    name = "?"
    version = "?"

    def __init__(self, work):
        self.work = work
        self.homes = 0
        self.home = None

    # Each manager supplies: exe, home_var, pid_file, and maybe fixups.
    def env(self):
        return dict(os.environ, **{self.home_var: self.home})

    def fresh(self):
        """A new empty home, no daemon."""
        self.homes += 1
        self.home = os.path.join(self.work, f"{self.name.lower()}-home-{self.homes}")
        os.makedirs(self.home)

    def cli(self, *args, timeout=300, check=True):
        r = subprocess.run([*self.exe, *map(str, args)], env=self.env(), capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.work)
        if check and r.returncode != 0:
            tail = (r.stderr.strip() or r.stdout.strip())[-400:]
            raise RuntimeError(f"{self.name} {' '.join(map(str, args))} exited {r.returncode}: {tail}")
        return r

    def timed(self, *args, **kw):
        t0 = time.monotonic()
        self.cli(*args, **kw)
        return time.monotonic() - t0

    def daemon_pid(self):
        try:
            with open(os.path.join(self.home, self.pid_file)) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    def ping(self):
        """Start the daemon (if needed) and return its pid."""
        self.cli("ping")
        return wait_until(self.daemon_pid, f"the {self.name} daemon's pid file")

    def start(self, script, name, interpreter="none", instances=None, kill_timeout=None,
              autorestart=True, output=None, error="/dev/null", args=(), max_restarts=None,
              flags=()):
        a = ["start", script, "--name", name, *flags]
        if interpreter:
            a += ["--interpreter", interpreter]
        if instances:
            a += ["-i", instances]
        if kill_timeout is not None:
            a += ["--kill-timeout", kill_timeout]
        if not autorestart:
            a.append("--no-autorestart")
        if output:
            a += ["-o", output]
        if error:
            a += ["-e", error]
        if max_restarts is not None:
            a += ["--max-restarts", max_restarts]
        if args:
            a += ["--", *args]
        return self.cli(*a)

    def start_config(self, path):
        return self.cli("start", path, timeout=900)

    def stop(self, target):
        return self.cli("stop", target, timeout=900)

    def delete(self, target):
        return self.cli("delete", target, timeout=900)

    def reload(self, target):
        return self.cli("reload", target, timeout=300)

    def jlist(self):
        out = self.cli("jlist", timeout=300).stdout
        try:
            return json.loads(out)
        except ValueError:
            for line in reversed(out.splitlines()):  # skip any banner
                if line.startswith("["):
                    return json.loads(line)
            raise

    def online(self):
        return [a for a in self.jlist() if a.get("pm2_env", {}).get("status") == "online"]

    def kill(self):
        """Stop every app and the daemon (the manager's own way), then SIGKILL
        whatever is left of what we started."""
        if self.home and self.daemon_pid():  # `pm2 kill` would start a daemon
            try:
                self.cli("kill", timeout=180, check=False)
            except subprocess.TimeoutExpired:
                pass
        return kill_descendants(grace=3.0)


class Corral(Manager):
    name = "corral"
    home_var = "CORRAL_HOME"
    pid_file = "corral.pid"

    def __init__(self, work, binary):
        super().__init__(work)
        self.exe = [binary]
        r = subprocess.run([binary, "--version"], capture_output=True, text=True)
        self.version = (r.stdout.strip() or "?").split()[-1]


class Pm2(Manager):
    name = "PM2"
    home_var = "PM2_HOME"
    pid_file = "pm2.pid"

    def __init__(self, work, spec="pm2@7"):
        super().__init__(work)
        prefix = os.path.join(work, "pm2-prefix")
        env = dict(os.environ, npm_config_cache=os.path.join(work, "npm-cache"),
                   npm_config_update_notifier="false", npm_config_userconfig=os.path.join(work, "npmrc"))
        print(f"installing {spec} from the npm registry into {prefix} ...", flush=True)
        subprocess.run(["npm", "install", spec, "--prefix", prefix, "--no-audit", "--no-fund",
                        "--silent"], env=env, check=True, stdin=subprocess.DEVNULL, timeout=600)
        self.exe = [os.path.join(prefix, "node_modules", ".bin", "pm2")]
        with open(os.path.join(prefix, "node_modules", "pm2", "package.json")) as f:
            self.version = json.load(f)["version"]
        self.name = "PM2"

    def env(self):
        return dict(os.environ, PM2_HOME=self.home)


def config(apps, path):
    """An ecosystem file both managers read: {"apps": [...]}."""
    with open(path, "w") as f:
        json.dump({"apps": apps}, f)
    return path


def sleeper(ctx, name, **extra):
    return dict(name=name, script=ctx.stamp, interpreter="none", out_file="/dev/null",
                error_file="/dev/null", **extra)


# ---------------------------------------------------------------- results

class Stat:
    def __init__(self, values):
        self.values = [v for v in values if v is not None]

    @property
    def ok(self):
        return bool(self.values)

    @property
    def med(self):
        return statistics.median(self.values)


class Row:
    """One measured figure: per manager a Stat; `better` is lower/higher."""

    def __init__(self, section, metric, unit, better="lower"):
        self.section, self.metric, self.unit, self.better = section, metric, unit, better
        self.by = {}
        self.note = ""


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "s":
        if v < 0.001:
            return f"{v * 1e6:.0f} µs"
        if v < 1:
            return f"{v * 1000:.3g} ms"
        return f"{v:.3g} s"
    if unit == "KiB":
        return f"{v / 1024:.2f} MiB" if v >= 10240 else f"{v:.0f} KiB"
    if unit == "cpu":
        return f"{v:.3g} s" if v >= 0.1 else f"{v * 1000:.3g} ms"
    if unit == "MB/s":
        return f"{v:.0f} MB/s"
    if unit == "rps":
        return f"{v:,.0f}/s"
    return f"{v:.0f}{(' ' + unit) if unit else ''}"


def cell(st, unit):
    if st is None:
        return "—"
    if isinstance(st, str):
        return st
    if not st.ok:
        return "—"
    m = fmt(st.med, unit)
    if len(st.values) > 1 and max(st.values) != min(st.values):
        lo, hi = fmt(min(st.values), unit), fmt(max(st.values), unit)
        u = lo.split(" ")[-1]
        if hi.endswith(" " + u) and lo.endswith(" " + u):
            lo = lo[: -len(u) - 1]
        return f"{m} ({lo}–{hi})"
    return m


def ratio(row, a, b):
    """How many times better manager a is than manager b on this row."""
    sa, sb = row.by.get(a), row.by.get(b)
    if not (isinstance(sa, Stat) and isinstance(sb, Stat) and sa.ok and sb.ok):
        return None
    x, y = sa.med, sb.med
    if row.better == "lower":
        return y / x if x > 0 else None
    return x / y if y > 0 else None


class Ctx:
    pass


# ---------------------------------------------------------------- workloads

def settle_samples(pid, n, pause=0.2):
    rss, pss = [], []
    for _ in range(n):
        r, p = memory_kib(pid)
        rss.append(r)
        pss.append(p)
        time.sleep(pause)
    return rss, pss


def w_memory(m, ctx):
    """1. Daemon RSS / PSS idle and with 1, 10, 100, 1000 sleeping apps;
    also `jlist` with the largest count (a figure of workload 3)."""
    out = {}
    dpid = m.ping()
    time.sleep(1)
    out[("1", "daemon RSS, idle", "KiB")], out[("1", "daemon PSS, idle", "KiB")] = settle_samples(dpid, ctx.samples)
    # corral's spawner (the process that forks the apps for its daemon,
    # glibc builds): its PSS, the memory it adds (it shares its pages with
    # the daemon). PM2 has no such process.
    helper = [c for c in descendants(dpid) if comm(c) == "corral-spawner" and proc_stat(c)[1] == dpid]
    if helper:
        out[("1", "  its spawner's PSS, idle", "KiB")] = settle_samples(helper[0], ctx.samples)[1]
    have = 0
    for n in ctx.mem_counts:
        apps = [sleeper(ctx, f"m{i}") for i in range(have, n)]
        m.start_config(config(apps, os.path.join(ctx.work, f"mem-{m.name}-{n}.json")))
        wait_until(lambda: len(m.online()) >= n, f"{n} apps online", limit=600, pause=0.5)
        have = n
        time.sleep(1)
        rss, pss = settle_samples(dpid, ctx.samples)
        apps_ = f"{n} app" + ("s" if n > 1 else "")
        out[("1", f"daemon RSS, {apps_}", "KiB")] = rss
        out[("1", f"daemon PSS, {apps_}", "KiB")] = pss
    if helper:
        out[("1", f"  its spawner's PSS, {have} apps", "KiB")] = settle_samples(helper[0], ctx.samples)[1]
    times = []
    for _ in range(ctx.reps_jlist_big):
        times.append(m.timed("jlist"))
    out[("3", f"jlist, {have} apps", "s")] = times
    # What the daemon costs while it holds many apps: a ping (a wake that
    # must not look at every app), and a crash of one of them.
    pings, per_ping = [], []
    for _ in range(3):
        c0 = cpu_ns(dpid)
        for _ in range(ctx.pings_big):
            t = ping_request(m)
            if t is not None:
                pings.append(t)
        per_ping.append((cpu_ns(dpid) - c0) / 1e9 / ctx.pings_big)
    out[("3", f"ping, {have} apps (round trip)", "s")] = pings
    out[("3", f"  daemon CPU per ping, {have} apps", "s")] = per_ping
    log = os.path.join(ctx.work, f"{m.name}-crowd-victim.log")
    m.start(ctx.stamp, "crowd-victim", output=log, max_restarts=10000)
    wait_until(lambda: stamps(log), "the first exec")
    c0 = cpu_ns(dpid)
    out[("4", f"SIGKILL → replacement exec'd, 1 of {have + 1} apps", "s")] = \
        [kill_once(log, ctx) for _ in range(ctx.reps_crash_big)]
    # The gaps between kills are idle for both managers (no app is sampled).
    out[("4", f"  daemon CPU per restart, 1 of {have + 1} apps", "s")] = \
        [(cpu_ns(dpid) - c0) / 1e9 / ctx.reps_crash_big]
    return out


def w_cpu(m, ctx):
    """2. Daemon CPU seconds over a window with 100 idle apps."""
    m.ping()
    n = ctx.n_apps
    m.start_config(config([sleeper(ctx, f"c{i}") for i in range(n)],
                          os.path.join(ctx.work, f"cpu-{m.name}.json")))
    wait_until(lambda: len(m.online()) >= n, f"{n} apps online", limit=300, pause=0.5)
    time.sleep(2)
    dpid = m.daemon_pid()
    c0 = cpu_seconds(dpid)
    time.sleep(ctx.cpu_window)
    c1 = cpu_seconds(dpid)
    return {("2", f"daemon CPU, {ctx.cpu_window:g} s idle, {n} apps", "cpu"): [c1 - c0]}


def start_and_wait(m, ctx, name):
    """Seconds from just before `start` until the command has returned and
    the app has exec'd (its own clock), whichever is later."""
    log = os.path.join(ctx.work, f"{m.name}-{name}.log")
    t0 = time.time_ns()
    m.start(ctx.stamp, name, output=log)
    t_cli = time.time_ns()
    (ts, _), = wait_until(lambda: stamps(log)[:1], f"{name} to exec")
    return (max(t_cli, ts) - t0) / 1e9, (ts - t0) / 1e9


def w_start(m, ctx):
    """3. Cold start (no daemon) to one app online; warm start of one more."""
    out = {}
    cold, warm = [], []
    for i in range(ctx.reps_cold):
        if i:
            m.kill()
            m.fresh()
        cold.append(start_and_wait(m, ctx, f"cold{i}")[0])
    for i in range(ctx.reps_warm):
        warm.append(start_and_wait(m, ctx, f"warm{i}")[0])
    out[("3", "cold start (no daemon) → 1 app online", "s")] = cold
    out[("3", "warm start of 1 more app → online", "s")] = warm
    return out


def fork_loop(ctx, n):
    """Seconds from launching a C program that forks n children exec'ing
    the stamp app until it has seen all of them exec (the floor of a bulk
    start, its own exec included as a CLI's is)."""
    t0 = time.monotonic()
    p = subprocess.Popen([ctx.forker, str(n), ctx.stamp], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        line = p.stdout.readline()
        t1 = time.monotonic()
    finally:
        p.wait(timeout=60)
    if not line.startswith(b"all exec'd"):
        raise RuntimeError(f"the fork loop failed: {line!r}")
    return t1 - t0


def w_many(m, ctx):
    """3. 100 apps: start from one config file, jlist, stop all, delete all;
    beside a C loop forking as many (the floor of the start)."""
    n = ctx.n_apps
    m.ping()
    cfg = config([sleeper(ctx, f"a{i}") for i in range(n)], os.path.join(ctx.work, f"many-{m.name}.json"))
    start, jl, stop, delete, floor = [], [], [], [], []
    for _ in range(ctx.reps_many):
        # The floor right before each start, so both see the same host.
        floor.append(fork_loop(ctx, n))
        t0 = time.monotonic()
        m.start_config(cfg)
        t1 = time.monotonic()
        if len(m.online()) < n:  # both return with the apps online; if not, wait
            wait_until(lambda: len(m.online()) >= n, f"{n} apps online", limit=300, pause=0.05)
            t1 = time.monotonic()
        start.append(t1 - t0)
        for _ in range(ctx.reps_jlist):
            jl.append(m.timed("jlist"))
        stop.append(m.timed("stop", "all", timeout=900))
        delete.append(m.timed("delete", "all", timeout=900))
    return {("3", f"start {n} apps from one config file", "s"): start,
            ("3", f"  (a C loop forking {n}: fork → exec, all exec'd)", "s"): floor,
            ("3", f"jlist, {n} apps", "s"): jl,
            ("3", f"stop all, {n} apps", "s"): stop,
            ("3", f"delete all, {n} apps", "s"): delete}


def w_update(m, ctx):
    """9. Update in place (issue 11): N sleeping apps, then `corral update`
    (the daemon re-execs itself, apps untouched) or `pm2 update` (PM2 saves
    its list, kills its daemon and resurrects the list in a new one): from
    the command's start until it has returned and every app is online
    again; corral's own took_ms; and how many apps' pids changed. corral
    with 100 and 1000 apps (--quick: 10), PM2 with 100 (it is slow)."""
    pm2 = isinstance(m, Pm2)
    counts = [ctx.n_apps] if pm2 or ctx.quick else [ctx.n_apps, ctx.n_apps * 10]
    reps = 1 if ctx.quick else max(1, round((3 if pm2 else 10) * float(arg("--scale", "1"))))
    out = {}
    m.ping()
    for n in counts:
        names = {f"up{n}-{i}" for i in range(n)}
        apps = [sleeper(ctx, name) for name in sorted(names)]
        m.start_config(config(apps, os.path.join(ctx.work, f"update-{m.name}-{n}.json")))

        def pids():
            """({name: pid} of these apps, the middle of the jlist) once
            all are online, else None."""
            t = time.monotonic()
            got = {a["name"]: a["pid"] for a in m.online() if a.get("name") in names}
            return (got, (t + time.monotonic()) / 2) if len(got) == n else None
        secs, took, changed = [], [], []
        for _ in range(reps):
            before, _ = wait_until(pids, f"{n} apps online", limit=300, pause=0.05)
            t0 = time.monotonic()
            r = m.cli("update", timeout=600) if pm2 else m.cli("update", "--json")
            t1 = time.monotonic()
            # Every app online as the command returns: its time; else until
            # a jlist shows them all.
            first = pids()
            if first:
                after, end = first[0], t1
            else:
                after, end = wait_until(pids, f"{n} apps online after the update", limit=300, pause=0.005)
            secs.append(end - t0)
            if not pm2:
                took.append(json.loads(r.stdout)["took_ms"] / 1000)
            changed.append(sum(1 for k, p in before.items() if after.get(k) != p))
        if not pm2 and max(changed):
            ctx.notes.append(f"update on corral, {n} apps: pids changed ({changed} over {reps} runs)")
        out[("9", f"update in place, {n} apps: command → every app online", "s")] = secs
        if took:
            out[("9", f"  took_ms, {n} apps (request read → the new image answered, every app adopted)", "s")] = took
        out[("9", f"  apps whose pid changed, {n} apps", "")] = changed
        m.delete("all")
    return out


SECTIONS_UPDATE = ("9", "9. update in place")
METHODS_UPDATE = """
 - Update in place: N apps of the sleeper app from one config file, all
   online; then `corral update` (its daemon re-execs the binary on disk,
   every app and fd handed over) or `pm2 update` (PM2 dumps its list, kills
   its daemon and resurrects the list in a new one); timed from the
   command's start until it has returned, or, if a `jlist` then does not
   show every app online, until one does (polled every 5 ms; the middle of
   that jlist). took_ms is what corral's answer says: from
   the daemon reading the request until its new image answered with every
   app adopted. "pid changed" compares each app's pid before and after."""


def kill_once(log, ctx):
    """SIGKILL the app whose last stamp line is in `log` (after the gap);
    the seconds from the kill until its replacement's own clock at exec."""
    before = stamps(log)
    pid = before[-1][1]
    time.sleep(ctx.crash_gap)
    t0 = time.time_ns()
    os.kill(pid, signal.SIGKILL)
    new = wait_until(lambda: stamps(log)[len(before):], "the replacement's exec", limit=60)
    return (new[0][0] - t0) / 1e9


def w_crash(m, ctx):
    """4. SIGKILL the app; time until its replacement has exec'd; beside a
    minimal C supervisor (waitpid, then fork and exec at once: the floor),
    whose kills alternate with the manager's so that both see the same host
    (on a shared machine the floor drifts by tens of percent in a minute)."""
    m.ping()
    log = os.path.join(ctx.work, f"{m.name}-victim.log")
    m.start(ctx.stamp, "victim", output=log, max_restarts=10000)
    floor_log = os.path.join(ctx.work, f"{m.name}-floor-victim.log")
    with open(floor_log, "w") as f:
        # A session of its own: its group (it and its victim) is ended
        # at once below, leaving no orphan behind.
        sup = subprocess.Popen([ctx.supervisor, ctx.stamp], stdout=f, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    lat, floor = [], []
    try:
        wait_until(lambda: stamps(floor_log), "the floor's first exec")
        wait_until(lambda: stamps(log), "the first exec")
        for _ in range(ctx.reps_crash):
            floor.append(kill_once(floor_log, ctx))
            lat.append(kill_once(log, ctx))
    finally:
        try:
            os.killpg(sup.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sup.wait()
    return {("4", "SIGKILL → replacement exec'd", "s"): lat,
            ("4", "  (a minimal C supervisor: waitpid → fork → exec)", "s"): floor}


def w_logs(m, ctx):
    """5. An app writes N MB of lines to stdout: time from its exec until the
    log file holds all of it, and the daemon's CPU; beside the same app
    writing straight to a file (the limit, measured once per run)."""
    size = ctx.log_mb * 1000 * 1000
    out = {}
    if not ctx.direct_logs:
        secs = []
        for i in range(ctx.reps_logs):
            path, sp = os.path.join(ctx.work, "direct.log"), os.path.join(ctx.work, "direct.stamp")
            with open(path, "wb") as f:
                subprocess.run([ctx.flood, str(size), sp], stdout=f, check=True, timeout=600)
            t1 = time.time_ns()
            assert os.path.getsize(path) == size
            secs.append((t1 - stamps(sp)[0][0]) / 1e9)
            os.remove(path)
        ctx.direct_logs = secs
        secs = []
        for i in range(ctx.reps_logs):
            path, sp = os.path.join(ctx.work, "piped.log"), os.path.join(ctx.work, "piped.stamp")
            with open(path, "wb") as f:
                subprocess.run(f"{ctx.flood} {size} {sp} | cat", shell=True, stdout=f, check=True, timeout=600)
            t1 = time.time_ns()
            assert os.path.getsize(path) == size
            secs.append((t1 - stamps(sp)[0][0]) / 1e9)
            os.remove(path)
        ctx.piped_logs = secs
    m.ping()
    mb = size / 1e6
    # Plain, then with a timestamp on every line in the same format on both
    # managers, "YYYY-MM-DDTHH:mm:ss: " (21 bytes before each 100-byte
    # line): corral's log_date_format, PM2's --time (which sets that
    # log_date_format); alternating runs so both see the same machine load.
    stamp = ["--time"] if isinstance(m, Pm2) else ["--log-date-format", "YYYY-MM-DDTHH:mm:ss"]
    variants = [("", 0, []), (" with timestamps", 21, stamp)]
    if m.name == "corral":
        # Built-in rotation (PM2 needs the pm2-logrotate module): 10 MB
        # files, all kept, so every byte can be counted.
        variants.append((" with --max-log-size 10M", 0, ["--max-log-size", "10M", "--log-retain", "1000"]))
    runs = {v: ([], []) for v, _, _ in variants}
    for i in range(ctx.reps_logs):
        for label, stamp_len, flags in variants:
            want = size + (size // 100) * stamp_len
            s, c = flood_once(m, ctx, f"flood{i}{'t' if flags else ''}", size, want, flags, i)
            runs[label][0].append(s)
            runs[label][1].append(c)
    for label, _, _ in variants:
        secs, cpu = runs[label]
        out[("5", f"log throughput{label}, {ctx.log_mb} MB to stdout", "MB/s")] = [mb / s for s in secs]
        out[("5", f"daemon CPU while logging {ctx.log_mb} MB{label}", "cpu")] = cpu
    out[("5", "  (the same app writing straight to a file)", "MB/s")] = [mb / s for s in ctx.direct_logs]
    out[("5", "  (the same app through a pipe: `app | cat > file`)", "MB/s")] = [mb / s for s in ctx.piped_logs]
    return out


def flood_once(m, ctx, name, size, want, flags, i):
    """Start the flood app writing `size` bytes; wait until its log file
    holds `want` bytes (more than `size` with timestamps); the seconds
    (scaled to the share that arrived) and the daemon's CPU seconds."""
    path, sp = os.path.join(ctx.work, f"{m.name}-{name}.log"), os.path.join(ctx.work, f"{m.name}-{name}.stamp")
    dpid = m.daemon_pid()
    c0 = cpu_seconds(dpid)
    m.start(ctx.flood, name, output=path, autorestart=False, args=(size, sp), flags=flags)
    got, t1, deadline = 0, time.time_ns(), time.monotonic() + 600
    while got < want and time.monotonic() < deadline:
        now = logged_bytes(path)
        if now != got:
            got, t1 = now, time.time_ns()
        elif (stamps(sp) and not alive(stamps(sp)[0][1])
              and time.time_ns() - t1 > 5e9):
            break  # the app is gone and the file has not grown for 5 s
        time.sleep(0.002)
    c1 = cpu_seconds(dpid)
    if got < want:
        ctx.notes.append(f"logs on {m.name} ({name}), run {i + 1}: the log file holds {got} of {want} bytes "
                         f"({want - got} lost) 5 s after the app exited; timed to its last growth")
    secs = (t1 - stamps(sp)[0][0]) / 1e9 * want / max(got, 1)
    m.delete(name)
    for p in generations(path):
        os.remove(p)
    return secs, c1 - c0


def generations(path):
    """`path` and the files rotation made of it (`path.1`, `path.2`, ...)."""
    out, k = [], 1
    while os.path.exists(f"{path}.{k}"):
        out.append(f"{path}.{k}")
        k += 1
    return out + ([path] if os.path.exists(path) else [])


def logged_bytes(path):
    """Bytes in `path` and its rotated files."""
    total = 0
    for p in generations(path):
        try:
            total += os.path.getsize(p)
        except FileNotFoundError:
            pass
    return total


def w_stop(m, ctx):
    """6. Stop an app that ignores SIGINT, kill_timeout 1600 ms."""
    m.ping()
    secs = []
    for i in range(ctx.reps_stop):
        log = os.path.join(ctx.work, f"{m.name}-stubborn{i}.log")
        m.start(ctx.stubborn, f"stubborn{i}", output=log, kill_timeout=ctx.kill_timeout)
        (_, pid), = wait_until(lambda: stamps(log)[:1], "the stubborn app to exec")
        time.sleep(0.3)
        t0 = time.monotonic()
        m.stop(f"stubborn{i}")
        t1 = time.monotonic()
        if alive(pid):
            wait_until(lambda: not alive(pid), "the stubborn app to go", limit=30)
            t1 = time.monotonic()
        secs.append(t1 - t0)
        m.delete(f"stubborn{i}")
    return {("6", f"stop an app ignoring SIGINT, kill_timeout {ctx.kill_timeout}", "s"): secs}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, timeout=5.0):
    """One request on a new connection; the body, or raise."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/", headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read()
        if r.status != 200 or not body.startswith(b"pid "):
            raise RuntimeError(f"status {r.status}")
        return body
    finally:
        c.close()


def load_rps(port, seconds, ctx):
    """Requests per second: wrk if present, else Python keep-alive threads."""
    if ctx.wrk:
        r = subprocess.run([ctx.wrk, "-t2", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                           capture_output=True, text=True, timeout=seconds + 30, stdin=subprocess.DEVNULL)
        mt = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
        if not mt:
            raise RuntimeError(f"wrk: {r.stdout.strip()} {r.stderr.strip()}")
        errs = re.search(r"Socket errors: (.*)", r.stdout)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
        if non2xx:
            raise RuntimeError(f"wrk: {non2xx.group(0)}")
        return float(mt.group(1)), (errs.group(1) if errs else "")
    counts, stop_at = [], time.monotonic() + seconds

    def worker():
        n = 0
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while time.monotonic() < stop_at and n < 10_000_000:
            c.request("GET", "/")
            c.getresponse().read()
            n += 1
        c.close()
        counts.append(n)
    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 30)
    return sum(counts) / seconds, ""


def w_cluster(m, ctx):
    """7. 4 instances of a Node http app on one port: requests per second,
    and failed requests during a rolling reload under a bounded loop."""
    port = free_port()
    app = os.path.join(ctx.work, f"http-{m.name}.js")
    with open(app, "w") as f:
        f.write(CLUSTER_APP.replace("{port}", str(port)))
    m.ping()
    m.start(app, "web", interpreter=None, instances=4, output="/dev/null")
    wait_until(lambda: len(m.online()) >= 4, "4 instances online", limit=60, pause=0.2)

    def answers():
        try:
            get(port, 1)
            return True
        except Exception:
            return False
    wait_until(answers, f"127.0.0.1:{port} to answer", limit=30, pause=0.05)
    rps, notes = [], []
    for _ in range(ctx.reps_rps):
        r, errs = load_rps(port, ctx.rps_seconds, ctx)
        rps.append(r)
        if errs:
            notes.append(errs)
    failed, ok_counts, reload_secs = [], [], []
    for _ in range(ctx.reps_reload):
        before = sorted(a["pid"] for a in m.online())
        stop = threading.Event()
        tally = []

        def loop():
            ok = bad = 0
            end = time.monotonic() + 120  # bounded in time ...
            while not stop.is_set() and time.monotonic() < end and ok + bad < 200_000:  # ... and count
                try:
                    get(port)
                    ok += 1
                except Exception:
                    bad += 1
            tally.append((ok, bad))
        threads = [threading.Thread(target=loop) for _ in range(ctx.reload_loops)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        m.reload("web")
        reload_secs.append(time.monotonic() - t0)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
        after = sorted(a["pid"] for a in m.online())
        if len(after) != 4 or set(before) & set(after):
            notes.append(f"reload left pids {after} (before {before})")
        failed.append(sum(b for _, b in tally))
        ok_counts.append(sum(o for o, _ in tally))
    row_notes = "; ".join(notes)
    out = {("7", f"requests/s, 4 instances, one port ({'wrk -t2 -c32' if ctx.wrk else 'python, 4 conns'})", "rps"): rps,
           ("7", "failed requests during a rolling reload", ""): failed,
           ("7", "  requests served during the reload", ""): ok_counts,
           ("7", "  reload command duration", "s"): reload_secs}
    if row_notes:
        ctx.notes.append(f"{m.name} cluster: {row_notes}")
    return out


# The crash storm: this many apps, crash-looping this long (--quick: 10
# apps for 3 s; --scale multiplies the seconds, and below 1 the apps too).
STORM_APPS, STORM_SECONDS = 300, 60
# High enough that neither manager gives up on an app during the storm.
STORM_MAX_RESTARTS = 1_000_000_000
# Seconds between two pings during the storm.
STORM_PING_GAP = 0.1


def storm_size(ctx):
    """(apps, seconds) of the crash storm."""
    if ctx.quick:
        return 10, 3.0
    scale = float(arg("--scale", "1"))
    apps = STORM_APPS if scale >= 1 else max(10, round(STORM_APPS * scale))
    return apps, max(3.0, STORM_SECONDS * scale)


def amp_encode(parts):
    """One AMP message (the framing of PM2's axon sockets): a byte of
    version 1 and part count, then each part as a 32-bit big-endian length
    and its bytes."""
    out = bytes([1 << 4 | len(parts)])
    for p in parts:
        out += len(p).to_bytes(4, "big") + p
    return out


def amp_read(sock):
    """The parts of one AMP message read from `sock`."""
    def exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("the daemon closed the connection")
            buf += chunk
        return buf
    count = exactly(1)[0] & 0xF
    return [exactly(int.from_bytes(exactly(4), "big")) for _ in range(count)]


def ping_request(m, limit=10.0):
    """Seconds for one `ping` on a new connection to the daemon's control
    socket (connect, request, the whole answer), measured here so no CLI's
    start-up is in it; None if no answer within `limit`. corral: a JSON
    line on corral.sock. PM2: its axon RPC on rpc.sock as its own client
    sends it — the parts `j:{"type":"call","method":"ping","args":[{}]}`
    and a message id, which the answer carries back."""
    pm2 = isinstance(m, Pm2)
    path = os.path.join(m.home, "rpc.sock" if pm2 else "corral.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(limit)
    t0 = time.monotonic()
    try:
        s.connect(path)
        if pm2:
            call = json.dumps({"type": "call", "method": "ping", "args": [{}]}).encode()
            s.sendall(amp_encode([b"j:" + call, b"s:bench:1"]))
            parts = amp_read(s)
            ok = parts[-1:] == [b"s:bench:1"] and b"pong" in parts[0]
        else:
            s.sendall(b'{"id":1,"cmd":"ping"}\n')
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            ok = buf.endswith(b"\n") and b'"ok":true' in buf
        t1 = time.monotonic()
    except (OSError, EOFError):
        return None
    finally:
        s.close()
    if not ok:
        raise RuntimeError(f"{m.name}: an unexpected answer to ping")
    return t1 - t0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else None


def restarts_now(m):
    """({app name: its restarts so far}, the moment they were counted: the
    middle of the jlist)."""
    t0 = time.monotonic()
    apps = m.jlist()
    t1 = time.monotonic()
    return {a.get("name"): a.get("pm2_env", {}).get("restart_time", 0) for a in apps}, (t0 + t1) / 2


def w_storm(m, ctx):
    """8. A crash storm: N apps that exit at once, each restarted as soon as
    the manager's defaults allow (max_restarts so high that none gives up),
    for S seconds: the daemon's CPU over the window, its RSS and open fds
    at the start and at the end, ping latency sampled during it, and the
    restarts per second achieved."""
    n, secs = storm_size(ctx)
    dpid = m.ping()
    apps = [dict(name=f"crash{i}", script=ctx.crasher, interpreter="none", out_file="/dev/null",
                 error_file="/dev/null", max_restarts=STORM_MAX_RESTARTS) for i in range(n)]
    t = time.monotonic()
    m.start_config(config(apps, os.path.join(ctx.work, f"storm-{m.name}.json")))
    start = time.monotonic() - t
    r0, ta = restarts_now(m)
    t0 = time.monotonic()
    c0, (rss0, _), fd0 = cpu_seconds(dpid), memory_kib(dpid), fd_count(dpid)
    pings, missed = [], 0
    while time.monotonic() < t0 + secs:
        p = ping_request(m)
        if p is None:
            missed += 1
        else:
            pings.append(p)
        time.sleep(max(0.0, min(STORM_PING_GAP, t0 + secs - time.monotonic())))
    c1, (rss1, _), fd1 = cpu_seconds(dpid), memory_kib(dpid), fd_count(dpid)
    t1 = time.monotonic()
    if not alive(dpid):
        raise RuntimeError(f"the {m.name} daemon died during the crash storm")
    r1, tb = restarts_now(m)
    rate = (sum(r1.values()) - sum(r0.values())) / (tb - ta)
    if rate <= 0:
        raise RuntimeError("no restarts during the crash storm")
    idle = [a for a in r1 if r1[a] <= r0.get(a, 0)]
    if idle:
        ctx.notes.append(f"crash storm on {m.name}: {len(idle)} of {n} apps did not restart during "
                         f"the window (given up?): {', '.join(sorted(idle)[:5])}")
    if missed:
        ctx.notes.append(f"crash storm on {m.name}: {missed} of {missed + len(pings)} pings "
                         f"unanswered within 10 s")
    what = f"{n} apps crash-looping, {secs:g} s"
    return {("8", f"start the {n} apps from one config file", "s"): [start],
            ("8", f"daemon CPU, {what}", "cpu"): [c1 - c0],
            ("8", "  daemon CPU per restart", "s"): [(c1 - c0) / (rate * (t1 - t0))],
            ("8", "  restarts per second achieved", "rps"): [rate],
            ("8", "daemon RSS at the storm's start", "KiB"): [rss0],
            ("8", "daemon RSS at its end", "KiB"): [rss1],
            ("8", "daemon open fds at the storm's start", ""): [fd0],
            ("8", "daemon open fds at its end", ""): [fd1],
            ("8", "ping p50 during the storm", "s"): [percentile(pings, 0.5)],
            ("8", "ping p99 during the storm", "s"): [percentile(pings, 0.99)],
            ("8", "  pings answered (one at a time)", ""): [len(pings)]}


WORKLOADS = [
    ("memory", w_memory),
    ("cpu", w_cpu),
    ("start", w_start),
    ("many", w_many),
    ("update", w_update),
    ("crash", w_crash),
    ("logs", w_logs),
    ("stop", w_stop),
    ("cluster", w_cluster),
    ("storm", w_storm),
]

BETTER_HIGHER = {"MB/s", "rps"}

SECTIONS = {
    "1": "1. daemon memory",
    "2": "2. daemon CPU",
    "3": "3. start, list, stop",
    "4": "4. crash restart",
    "5": "5. logs",
    "6": "6. stop timeout",
    "7": "7. cluster",
    "8": "8. crash storm",
}

METHODS = """\
Method (all times wall clock on this machine, medians with min–max over n runs):
 - Every workload runs on one manager at a time, from a fresh home with no
   daemon; the managers alternate workload by workload.
 - The daemon is the process in corral.pid / pm2.pid (PM2's "God" daemon).
   RSS is VmRSS, PSS is Pss of /proc/PID/smaps_rollup; both sampled {samples}
   times 0.2 s apart, 1 s after the apps are online. CPU is utime+stime of
   the daemon (all its threads) from /proc/PID/stat.
 - Apps are static C programs (`stamp`: prints CLOCK_REALTIME and its pid at
   the first line of main(), then pause()s; interpreter none; output
   /dev/null for the many-app workloads).
 - Start → online: from just before the start command until the command has
   returned AND the app has exec'd (read from the app's own clock).
 - Crash restart: the app's pid is read from its own stamp line; t0 is
   CLOCK_REALTIME just before kill(pid, SIGKILL); t1 is the CLOCK_REALTIME
   the replacement process read as the first thing in main() — so the figure
   is "until the replacement process exists and runs", exec included.
   {crash_gap:g} s between kills; max_restarts 10000 so no manager gives up.
   The floor is a 15-line C supervisor (waitpid, then fork + execl at once)
   measured the same way, its kills alternating with the manager's (floor,
   manager, floor, ...), so both see the same host: the goal compares the
   manager with the floor measured beside it. "1 of N apps": the same
   with the N-1 sleeping apps of the memory workload beside it.
 - With the memory workload's largest count of apps running: pings on the
   control socket (as the storm's, below), and the daemon's CPU per ping
   (the schedstat of all its threads, in ns, over 3 × 100 pings); the
   daemon's CPU per restart over the kills of "1 of N apps".
 - Bulk start floor: a C program forks N children that exec the stamp app
   (output /dev/null) and says so once all have exec'd (every write end of
   a close-on-exec pipe is gone); timed from launching it, as the CLI is;
   run right before each of the manager's starts, so both see the same host.
 - Logs: a static C app writes N bytes of 100-byte lines to stdout in 100 kB
   write()s; from the app's exec (its own clock) until the log file (-o)
   holds all N bytes (if a manager loses bytes: until the file last grew,
   rate = bytes that arrived / time). "with timestamps": the same with a
   timestamp before every line, "YYYY-MM-DDTHH:mm:ss: " on both managers
   (corral `--log-date-format YYYY-MM-DDTHH:mm:ss`, PM2 `--time`, which
   sets that log_date_format); the rate is of the app's N bytes, the file
   holds 21 % more. "with --max-log-size 10M"
   (corral only; PM2 has no built-in rotation): the same, rotated into
   10 MB files, the bytes of all of them counted. The limit is the same app with stdout on a file; the
   same app piped through `cat` to the file shows what one pipe costs.
 - Stop timeout: `stop` of an app with SIGINT ignored and kill_timeout set;
   from the command's start until it has returned and the process is gone.
 - Cluster: `start app.js -i 4`, the same unmodified Node http app for both
   (listen(PORT,'127.0.0.1')). Requests/s by wrk (or Python threads) on
   loopback. Reload: {loops} threads each run a sequential loop of GET on a new
   connection (timeout 5 s, bounded to 120 s and 200k requests) from 0.5 s
   before `reload` until 0.5 s after it returned; failed = refused, reset,
   timed out or not 200.
""" + f"""\
 - Crash storm: N apps from one config file (the rows say how many and
   for how long: {STORM_APPS} for {STORM_SECONDS} s in a full run), each a static C
   program whose _start exits with status 1 at once (no C library
   start-up). The window opens when `start` has returned (how long that
   took is a row). Each manager's restart defaults, with max_restarts
   {STORM_MAX_RESTARTS:,} on both so none gives up: corral restart_delay 0 and
   min_restart_interval 100 ms (an app that died within 100 ms of its
   start waits out the rest: at most 10 restarts/s per app); PM2
   restart_delay 0 and no backoff (it restarts at once). Daemon CPU is
   over the window; RSS and open fds (/proc/PID/fd) are read once at its
   start and once at its end. Restarts/s: the sum of restart_time over
   `jlist` at both ends, divided by the time between the middles of the
   two jlists; CPU per restart is the daemon CPU / (that rate × the
   window). Ping: every {STORM_PING_GAP:g} s, one ping request on a new connection to
   the control socket, timed here from connect to the whole answer, so no
   CLI start-up is in it: corral a JSON line on corral.sock; PM2 the axon
   RPC call its own CLI sends for `pm2 ping` (AMP-framed, on rpc.sock). A
   ping with no answer in 10 s, or an app that did not restart during the
   window, is a note.
""" + """\
 - "advantage" is how many times better corral's median is (PM2 ÷ corral
   for times, memory and CPU; corral ÷ PM2 for throughput)."""


SECTIONS.setdefault(*SECTIONS_UPDATE)
METHODS += METHODS_UPDATE

# ---------------------------------------------------------------- running

def build_apps(work):
    src = os.path.join(work, "apps.c")
    with open(src, "w") as f:
        f.write(APPS_C)
    out = {}
    for name, flag in (("stamp", None), ("stubborn", "-DSTUBBORN"), ("flood", "-DFLOOD"),
                       ("supervisor", "-DSUPERVISOR"), ("forker", "-DFORKER"),
                       ("crasher", "-DCRASHER -nostartfiles")):
        exe = os.path.join(work, name)
        cmd = ["gcc", "-O2", "-static", "-o", exe, src]
        if flag:
            cmd[1:1] = flag.split()
        subprocess.run(cmd, check=True)
        out[name] = exe
    return out


def find_wrk(quick):
    w = shutil.which("wrk")
    if w or quick:
        return w
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk with apt-get ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=300)
    return shutil.which("wrk")


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / 1024 / 1024
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if dirty:
            commit += " (src/ modified)"
    except OSError:
        commit = "?"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("node") else "none"
    return {"cores": os.cpu_count(), "cpu": model, "memory": f"{mem:.1f} GiB",
            "kernel": os.uname().release, "node": node, "commit": commit}


def goals(rows, corral, pm2, binary_bytes=None):
    """The goals of the issues, evaluated: (text, met, detail)."""
    find = {(r.section, r.metric): r for r in rows}
    out = []

    def med(sec, metric, who):
        r = find.get((sec, metric))
        st = r.by.get(who) if r else None
        return st.med if isinstance(st, Stat) and st.ok else None

    for n, mib in ((100, 2), (1000, 4)):
        rss = [r for r in rows if r.section == "1" and r.metric.startswith("daemon RSS")
               and r.metric.endswith(f" {n} apps")]
        v = med("1", rss[0].metric, corral) if rss else None
        if v is not None:
            out.append((f"daemon RSS ≤ {mib} MiB with {n} apps", v <= mib * 1024,
                        f"{v:.0f} KiB = {v / 1024:.2f} MiB"))
    if binary_bytes is not None:
        out.append(("release binary ≤ 2.5 MB", binary_bytes <= 2_500_000,
                    f"{binary_bytes / 1e6:.2f} MB ({binary_bytes} bytes)"))
    for r in rows:
        # The idle goal: section 2 (the logs and the storm have CPU rows too).
        if r.section == "2" and r.metric.startswith("daemon CPU") and med(r.section, r.metric, corral) is not None:
            v = med(r.section, r.metric, corral)
            out.append((f"{r.metric}: ≤ 10 ms", v <= 0.010, f"{v * 1000:.0f} ms"))
    v = med("3", "jlist, 1000 apps", corral)
    if v is not None:
        out.append(("jlist, 1000 apps: ≤ 10 ms", v <= 0.010, f"{v * 1000:.1f} ms"))
    for sec, metric, floor_prefix, k in (
            ("4", "SIGKILL → replacement exec'd", "  (a minimal C supervisor", 1.3),
            ("3", None, "  (a C loop forking", 1.5)):
        floor = next((r for r in rows if r.section == sec and r.metric.startswith(floor_prefix)), None)
        if metric is None:
            metric = next((r.metric for r in rows if r.section == "3" and r.metric.startswith("start ")
                           and r.metric.endswith("from one config file")), None)
        v = med(sec, metric, corral) if metric else None
        # The floor measured beside corral (the crash floor is per manager).
        st = floor.by.get(corral) if floor else None
        f = st.med if isinstance(st, Stat) and st.ok else None
        if v is not None and f:
            out.append((f"{metric}: ≤ {k}× the C floor", v <= k * f,
                        f"{v * 1000:.2f} ms = {v / f:.2f}× {f * 1000:.2f} ms"))
    for sec, metric in (("3", "cold start (no daemon) → 1 app online"),
                        ("3", "warm start of 1 more app → online"),
                        ("4", "SIGKILL → replacement exec'd")):
        r = find.get((sec, metric))
        x = ratio(r, corral, pm2) if r and pm2 else None
        if x is not None:
            out.append((f"{metric}: ≥ 20× faster than PM2", x >= 20, f"{x:.1f}×"))
    lr = [r for r in rows if r.metric.startswith("log throughput")]
    if lr and ratio_direct(lr[0], rows, corral) is not None:
        x = ratio_direct(lr[0], rows, corral)
        out.append(("log throughput within 2× of writing the file directly", x <= 2,
                    f"direct is {x:.2f}× corral"))
    plain = [r for r in lr if " with " not in r.metric]
    timed = [r for r in lr if " with timestamps" in r.metric]
    if plain and timed:
        p, t = med("5", plain[0].metric, corral), med("5", timed[0].metric, corral)
        if p and t:
            out.append(("log throughput with timestamps ≥ 80 % of plain", t >= 0.8 * p,
                        f"{t / p * 100:.0f} % ({t:.0f} of {p:.0f} MB/s)"))
    f = med("7", "failed requests during a rolling reload", corral)
    if f is not None:
        r = find[("7", "failed requests during a rolling reload")]
        mx = max(r.by[corral].values)
        out.append(("zero failed requests during reload", mx == 0, f"max {mx:.0f} failed over {len(r.by[corral].values)} reloads"))
    took = med("9", "  took_ms, 1000 apps (request read → the new image answered, every app adopted)", corral)
    if took is not None:
        moved = find[("9", "  apps whose pid changed, 1000 apps")].by[corral].values
        whole = med("9", "update in place, 1000 apps: command → every app online", corral)
        out.append(("update with 1000 apps ≤ 50 ms, no app restarted", took <= 0.050 and max(moved) == 0,
                    f"took_ms {took * 1000:.0f} ms (command → all online {whole * 1000:.0f} ms); "
                    f"pids changed: max {max(moved):.0f}"))
    return out


def ratio_direct(row, rows, who):
    direct = [r for r in rows if "straight to a file" in r.metric]
    st = row.by.get(who)
    if not direct or not isinstance(st, Stat) or not st.ok:
        return None
    d = direct[0].by.get(who)
    return d.med / st.med if isinstance(d, Stat) and d.ok else None


def render(rows, managers, info, goal_list, elapsed, markdown):
    names = [m.name for m in managers]
    head = ["figure", *[f"{m.name} {m.version}" for m in managers]]
    if len(managers) > 1:
        head.append(f"{names[0]} advantage")
    table = []
    for r in rows:
        line = [f"{r.metric}" + (f"  (n={max(len(s.values) for s in r.by.values() if isinstance(s, Stat))})"
                                 if any(isinstance(s, Stat) and len(s.values) > 1 for s in r.by.values()) else "")]
        for n in names:
            line.append(cell(r.by.get(n), r.unit))
        if len(managers) > 1:
            x = ratio(r, names[0], names[1])
            line.append("—" if x is None or r.metric.startswith("  ") else (f"{x:.1f}×" if x < 100 else f"{x:.0f}×"))
        table.append((r.section, line))
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        last = None
        for sec, line in table:
            if sec != last:
                lines.append(f"| **{SECTIONS[sec]}** |" + " |" * (len(head) - 1))
                last = sec
            line = [c.replace("|", "\\|") for c in [line[0].replace("  (", " (").strip()] + line[1:]]
            lines.append("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(head[i]), *(len(l[i]) for _, l in table)) for i in range(len(head))]
        sep = "  "
        lines.append(sep.join(h.ljust(w) for h, w in zip(head, widths)))
        lines.append(sep.join("-" * w for w in widths))
        last = None
        for sec, line in table:
            if sec != last:
                lines.append(SECTIONS[sec])
                last = sec
            lines.append(sep.join([("  " + line[0]).ljust(widths[0] + 2)[:widths[0] + 2]] +
                                  [c.rjust(w) for c, w in zip(line[1:], widths[1:])]))
    gl = []
    for text, met, detail in goal_list:
        gl.append(("- " if markdown else "  ") + f"{'met   ' if met else 'MISSED'}  {text}: {detail}")
    return lines, gl


def arg(name, default=None):
    if name in sys.argv:
        i = sys.argv.index(name)
        if i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        raise SystemExit(f"{name} needs a value")
    return default


def main():
    known = {"--quick", "--no-pm2", "--corral", "--only", "--scale", "--markdown", "-h", "--help"}
    for a in sys.argv[1:]:
        if a.startswith("-") and a not in known:
            raise SystemExit(f"unknown option {a}\n\n{__doc__}")
    if "-h" in sys.argv or "--help" in sys.argv:
        print(__doc__)
        return 0
    quick = "--quick" in sys.argv
    use_pm2 = not quick and "--no-pm2" not in sys.argv
    only = arg("--only")
    selected = [w for w in WORKLOADS if not only or w[0] in only.split(",")]
    if only and len(selected) != len(only.split(",")):
        raise SystemExit(f"--only: workloads are {', '.join(n for n, _ in WORKLOADS)}")
    scale = float(arg("--scale", "1"))

    def reps(n):
        return max(1, round(n * scale))

    ctx = Ctx()
    ctx.quick = quick
    ctx.samples = 2 if quick else 5
    ctx.mem_counts = [1, 10] if quick else [1, 10, 100, 1000]
    ctx.n_apps = 10 if quick else 100
    ctx.cpu_window = 1 if quick else 30
    ctx.reps_cold = 1 if quick else reps(5)
    ctx.reps_warm = 1 if quick else reps(10)
    ctx.reps_many = 1 if quick else reps(3)
    ctx.reps_jlist = 1 if quick else reps(10)
    ctx.reps_jlist_big = 1 if quick else reps(5)
    ctx.pings_big = 10 if quick else 100
    ctx.reps_crash_big = 2 if quick else reps(10)
    ctx.reps_crash = 2 if quick else reps(40)
    ctx.crash_gap = 0.05 if quick else 0.25
    ctx.log_mb = 5 if quick else 200
    ctx.reps_logs = 1 if quick else reps(3)
    ctx.reps_stop = 1 if quick else reps(3)
    ctx.kill_timeout = 300 if quick else 1600
    ctx.reps_rps = 1 if quick else reps(3)
    ctx.rps_seconds = 1 if quick else 5
    ctx.reps_reload = 1 if quick else reps(3)
    ctx.reload_loops = 2
    ctx.direct_logs = None
    ctx.notes = []

    set_subreaper()
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    binary = arg("--corral")
    if not binary:
        print("building the release binary (scripts/build-static.sh) ...", flush=True)
        out = subprocess.run(["sh", BUILD_SCRIPT, "--quiet"], cwd=ROOT, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        binary = out.strip().splitlines()[-1]
    binary = os.path.abspath(binary)

    t_start = time.monotonic()
    work = tempfile.mkdtemp(prefix="corral-bench-")
    ctx.work = work
    managers = []
    failures = []
    rows = {}
    try:
        apps = build_apps(work)
        ctx.stamp, ctx.stubborn, ctx.flood = apps["stamp"], apps["stubborn"], apps["flood"]
        ctx.supervisor, ctx.forker = apps["supervisor"], apps["forker"]
        ctx.crasher = apps["crasher"]
        if any(n == "cluster" for n, _ in selected) and not shutil.which("node"):
            selected = [w for w in selected if w[0] != "cluster"]
            ctx.notes.append("no `node` on PATH: the cluster workload was skipped")
        ctx.wrk = find_wrk(quick) if any(n == "cluster" for n, _ in selected) else None
        managers.append(Corral(work, binary))
        if use_pm2:
            managers.append(Pm2(work))
        for wname, fn in selected:
            for m in managers:
                print(f"[{time.monotonic() - t_start:6.1f} s] {wname}: {m.name}", flush=True)
                m.fresh()
                try:
                    res = fn(m, ctx)
                    for (sec, metric, unit), vals in res.items():
                        if metric.startswith("  (") and (sec, metric) in rows:
                            continue  # a reference figure (no manager): shown once
                        r = rows.setdefault((sec, metric), Row(sec, metric, unit,
                                                               "higher" if unit in BETTER_HIGHER else "lower"))
                        r.by[m.name] = Stat(vals)
                except (Exception, subprocess.TimeoutExpired) as e:
                    failures.append(f"{wname} on {m.name}: {e}")
                    print(f"  FAILED: {e}", flush=True)
                finally:
                    left = m.kill()
                    if left:
                        ctx.notes.append(f"{wname} on {m.name}: still there 3 s after `kill`, "
                                         f"SIGKILLed: {', '.join(left)}")
    finally:
        for m in managers:
            try:
                if m.home:
                    m.kill()
            except Exception:
                pass
        kill_descendants()
        shutil.rmtree(work, ignore_errors=True)

    order = {k: i for i, k in enumerate(rows)}
    first = ["daemon RSS", "daemon PSS", "cold", "warm", "start ", "jlist", "stop", "delete"]

    def key(r):
        rank = next((i for i, p in enumerate(first) if r.metric.startswith(p)), len(first))
        if r.section == "3" and r.metric.startswith("jlist"):
            rank = (rank, int(re.search(r"(\d+) app", r.metric).group(1)))
        elif r.section != "3" or rank >= len(first):
            rank = (len(first), order[(r.section, r.metric)])
        else:
            rank = (rank, 0)
        if r.section == "1":
            rank = (0, order[(r.section, r.metric)])
        return r.section, rank
    row_list = sorted(rows.values(), key=key)
    info = machine()
    info["corral binary"] = binary
    elapsed = time.monotonic() - t_start
    names = [m.name for m in managers]
    gl = goals(row_list, names[0], names[1] if len(names) > 1 else None,
               binary_bytes=os.path.getsize(binary))
    header = (f"{time.strftime('%Y-%m-%d %H:%M %Z')}; {info['cores']} cores ({info['cpu']}), "
              f"{info['memory']} memory, Linux {info['kernel']}, node {info['node']}; corral {info['commit']}; "
              + ", ".join(f"{m.name} {m.version}" for m in managers) + f"; {elapsed:.0f} s"
              + (" (quick smoke mode: tiny sizes, one repetition; not a measurement)" if quick else ""))
    table, glines = render(row_list, managers, info, gl, elapsed, markdown=False)
    print()
    print(header)
    print()
    print("\n".join(table))
    print()
    if glines:
        print("Goals (corral):")
        print("\n".join(glines))
        print()
    print(METHODS.format(samples=ctx.samples, crash_gap=ctx.crash_gap, loops=ctx.reload_loops))
    for n in ctx.notes:
        print(f"note: {n}")
    for f in failures:
        print(f"FAILED: {f}")
    md = arg("--markdown")
    if md:
        mtable, mgoals = render(row_list, managers, info, gl, elapsed, markdown=True)
        with open(md, "w") as f:
            f.write(header + "\n\n" + "\n".join(mtable) + "\n\n")
            if mgoals:
                f.write("Goals (corral):\n\n" + "\n".join(mgoals) + "\n\n")
            f.write("```\n" + METHODS.format(samples=ctx.samples, crash_gap=ctx.crash_gap,
                                             loops=ctx.reload_loops) + "\n```\n")
            for n in ctx.notes:
                f.write(f"\nnote: {n}\n")
            for x in failures:
                f.write(f"\nFAILED: {x}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
