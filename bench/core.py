#!/usr/bin/env python3
"""Core figures of the corral daemon (issue 2), corral only.

    python3 bench/core.py [--runs N] [--quick]

Builds the release binary, runs every workload in a temporary CORRAL_HOME,
prints medians with min-max, and stops everything it started. The app is
`stamp`, a tiny static C program that prints CLOCK_REALTIME in ns at exec
and then waits, so "exec'd" is measured inside the new process.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORRAL = os.path.join(ROOT, "target/x86_64-unknown-linux-gnu/release/corral")

STAMP_C = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    printf("%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    fflush(stdout);
    for (;;) pause();
}
"""


def run(home, *args, check=True):
    env = dict(os.environ, CORRAL_HOME=home)
    r = subprocess.run([CORRAL, *args], env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"corral {' '.join(args)} failed: {r.stderr.strip()}")
    return r


def wait_until(cond, what, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.0005)
    raise SystemExit(f"timed out waiting for {what}")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pss_kb(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def stamps(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def summary(name, values, unit):
    med = statistics.median(values)
    print(f"{name:<44} {med:>10.3f} {unit:<3} (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})")
    return med


def main():
    runs = 20
    if "--runs" in sys.argv:
        runs = int(sys.argv[sys.argv.index("--runs") + 1])
    quick = "--quick" in sys.argv
    if quick:
        runs = 3
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="corral-bench-")
    home = os.path.join(work, "home")
    try:
        stamp = os.path.join(work, "stamp")
        with open(stamp + ".c", "w") as f:
            f.write(STAMP_C)
        subprocess.run(["gcc", "-O2", "-static", "-o", stamp, stamp + ".c"], check=True)

        print(f"binary size: {os.path.getsize(CORRAL)} bytes ({os.path.getsize(CORRAL) / 1048576:.2f} MiB)")
        run(home, "ping")
        with open(os.path.join(home, "corral.pid")) as f:
            dpid = int(f.read())
        print(f"daemon RSS idle: {rss_kb(dpid)} kB (PSS {pss_kb(dpid)} kB)")

        # Start to exec: from just before `corral start` to the app's own clock.
        lat = []
        for i in range(runs):
            out = os.path.join(work, f"s{i}.log")
            t0 = time.time_ns()
            run(home, "start", stamp, "--name", f"s{i}", "--output", out, "--json")
            ts = wait_until(lambda: stamps(out), "the app's stamp")
            lat.append((ts[0] - t0) / 1e6)
        summary("corral start -> app exec'd (binary)", lat, "ms")
        run(home, "delete", "all")

        # SIGKILL to replacement exec'd.
        out = os.path.join(work, "victim.log")
        run(home, "start", stamp, "--name", "victim", "--output", out, "--min-uptime", "0")
        wait_until(lambda: stamps(out), "the first stamp")
        lat = []
        for i in range(runs):
            desc = json.loads(run(home, "describe", "victim", "--json").stdout)[0]
            before = len(stamps(out))
            t0 = time.time_ns()
            os.kill(desc["pid"], signal.SIGKILL)
            ts = wait_until(lambda: stamps(out)[before:] if len(stamps(out)) > before else None, "a replacement")
            lat.append((ts[0] - t0) / 1e6)
        summary("SIGKILL -> replacement exec'd", lat, "ms")
        run(home, "delete", "all")

        # 100 apps.
        n = 10 if quick else 100
        cfg = os.path.join(work, "apps.json")
        with open(cfg, "w") as f:
            json.dump({"apps": [{"name": f"a{i}", "script": stamp, "output": "/dev/null"} for i in range(n)]}, f)
        t0 = time.monotonic()
        run(home, "start", cfg, "--json")
        print(f"start {n} apps from one config file: {(time.monotonic() - t0) * 1000:.1f} ms")
        print(f"daemon RSS with {n} apps: {rss_kb(dpid)} kB (PSS {pss_kb(dpid)} kB)")
        lat = []
        for _ in range(runs):
            t0 = time.monotonic()
            run(home, "jlist")
            lat.append((time.monotonic() - t0) * 1000)
        summary(f"corral jlist with {n} apps", lat, "ms")
        print(f"daemon RSS after jlist: {rss_kb(dpid)} kB")
        t0 = time.monotonic()
        run(home, "stop", "all", "--json")
        summary(f"stop all ({n} cooperative apps)", [(time.monotonic() - t0) * 1000], "ms")
        run(home, "kill")
    finally:
        if os.path.exists(os.path.join(home, "corral.sock")):
            run(home, "kill", check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
