#!/usr/bin/env python3
"""A crash-storm soak of the corral daemon: N apps that exit at once, over
and over, for some minutes; the daemon's memory, fds, zombies and ping
latency at the start and at the end, then how long SIGTERM takes.

    python3 bench/soak.py                      # 300 apps, 3 minutes
    python3 bench/soak.py --minutes 1 --apps 150
    python3 bench/soak.py --corral target/debug/corral --json out.json

Options:
    --minutes M     how long the storm lasts (default 3; fractions work)
    --apps N        how many crash-looping apps (default 300)
    --window S      seconds measured at the start and at the end (default 15)
    --corral PATH   the binary (default: the static release binary built by
                    scripts/build-static.sh)
    --json FILE     also write the figures as JSON

Each app is `/bin/sh -c 'exit 1'` with a huge max_restarts; half have
restart_delay 0, half 100 ms. Ping latency is one `ping` request on a new
connection to the control socket (connect, write, read the answer), so it
is the daemon's and not the CLI's start-up. Everything runs in a fresh
temporary CORRAL_HOME; the script is a child subreaper and kills, by pid,
whatever it started that is left at the end.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children_of(pid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[1]) == pid:
            out.append((int(p), rest[0]))
    return out


def kill_leftovers():
    me = os.getpid()
    for _ in range(3):
        kids = [p for p, _ in children_of(me)]
        for p in kids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        if not kids:
            return
        time.sleep(0.1)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def zombies(pid):
    return sum(1 for _, state in children_of(pid) if state == "Z")


def ping_ms(sock_path, limit=10.0):
    t = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(limit)
    try:
        s.connect(sock_path)
        s.sendall(b'{"id":1,"cmd":"ping"}\n')
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                return None
            buf += chunk
        return (time.monotonic() - t) * 1000.0
    except OSError:
        return None
    finally:
        s.close()


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def measure(pid, sock_path, seconds):
    pings, missed, rss, fd, zomb = [], 0, [], [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ms = ping_ms(sock_path)
        if ms is None:
            missed += 1
        else:
            pings.append(ms)
        rss.append(rss_kib(pid))
        fd.append(fds(pid))
        zomb.append(zombies(pid))
        time.sleep(0.05)
    return {
        "pings": len(pings),
        "missed": missed,
        "ping_p50_ms": round(percentile(pings, 0.5), 2),
        "ping_p99_ms": round(percentile(pings, 0.99), 2),
        "rss_kib": max(rss),
        "fds": max(fd),
        "zombies_max": max(zomb),
    }


def restarts(binary, env):
    out = subprocess.run([binary, "jlist"], env=env, capture_output=True, timeout=60)
    try:
        return sum(a["pm2_env"]["restart_time"] for a in json.loads(out.stdout))
    except (ValueError, KeyError):
        return -1


def main():
    args = sys.argv[1:]
    opts = {"--minutes": "3", "--apps": "300", "--window": "15", "--corral": None, "--json": None}
    while args:
        a = args.pop(0)
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        if a not in opts or not args:
            print(f"soak.py: unknown option or missing value: {a}", file=sys.stderr)
            return 2
        opts[a] = args.pop(0)
    minutes, apps, window = float(opts["--minutes"]), int(opts["--apps"]), float(opts["--window"])
    binary = opts["--corral"]
    if binary is None:
        out = subprocess.run(["sh", os.path.join(ROOT, "scripts", "build-static.sh"), "--quiet"],
                             capture_output=True, text=True, check=True)
        binary = out.stdout.strip().splitlines()[-1]
    binary = os.path.abspath(binary)
    set_subreaper()
    work = tempfile.mkdtemp(prefix="corral-soak-")
    home = os.path.join(work, "h")
    env = dict(os.environ, CORRAL_HOME=home)
    env.pop("CORRAL_SOCKET", None)
    sock_path = os.path.join(home, "corral.sock")
    try:
        subprocess.run([binary, "ping"], env=env, capture_output=True, check=True, timeout=30)
        with open(os.path.join(home, "corral.pid")) as f:
            daemon = int(f.read())
        idle = {"rss_kib": rss_kib(daemon), "fds": fds(daemon)}
        config = os.path.join(work, "storm.json")
        with open(config, "w") as f:
            json.dump({"apps": [{
                "name": f"crash{i}", "script": "/bin/sh", "args": ["-c", "exit 1"],
                "interpreter": "none", "restart_delay": 0 if i % 2 == 0 else 100,
                "max_restarts": 1000000000, "cwd": work,
            } for i in range(apps)]}, f)
        t = time.monotonic()
        subprocess.run([binary, "start", config], env=env, capture_output=True, check=True,
                       timeout=120)
        start_took = time.monotonic() - t
        print(f"{apps} crash-looping apps started in {start_took:.2f} s; "
              f"soaking {minutes} min", flush=True)
        storm_end = t + minutes * 60
        first = measure(daemon, sock_path, min(window, minutes * 60 / 2))
        r0 = restarts(binary, env)
        time.sleep(max(0.0, storm_end - window - time.monotonic()))
        last = measure(daemon, sock_path, min(window, max(1.0, storm_end - time.monotonic())))
        r1 = restarts(binary, env)
        elapsed = time.monotonic() - t
        t = time.monotonic()
        os.kill(daemon, signal.SIGTERM)
        while os.path.exists(f"/proc/{daemon}"):
            try:
                os.waitpid(daemon, os.WNOHANG)
            except ChildProcessError:
                pass
            if time.monotonic() - t > 60:
                break
            time.sleep(0.01)
        sigterm_s = time.monotonic() - t
        left = [p for p, _ in children_of(os.getpid())]
        result = {
            "apps": apps, "minutes": minutes, "binary": binary, "idle": idle,
            "start": first, "end": last,
            "restarts_per_s": round((r1 - r0) / max(1e-9, elapsed - window), 1) if r0 >= 0 else None,
            "restarts_total": r1,
            "sigterm_exit_s": round(sigterm_s, 2),
            "processes_left": len(left),
        }
        print(f"idle daemon: RSS {idle['rss_kib']} KiB, {idle['fds']} fds")
        print(f"{'':8}{'RSS KiB':>9}{'fds':>6}{'zombies':>9}{'ping p50':>11}{'ping p99':>11}"
              f"{'pings':>7}{'missed':>8}")
        for name, m in (("start", first), ("end", last)):
            print(f"{name:8}{m['rss_kib']:>9}{m['fds']:>6}{m['zombies_max']:>9}"
                  f"{m['ping_p50_ms']:>9.1f}ms{m['ping_p99_ms']:>9.1f}ms{m['pings']:>7}"
                  f"{m['missed']:>8}")
        print(f"restarts: {r1} in all, {result['restarts_per_s']}/s; SIGTERM: the daemon "
              f"exited in {sigterm_s:.2f} s, {len(left)} processes left")
        if opts["--json"]:
            with open(opts["--json"], "w") as f:
                json.dump(result, f, indent=2)
        return 0
    finally:
        kill_leftovers()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
