#!/usr/bin/env python3
"""Log throughput: an app writes 100 MB of 100-byte lines to stdout as fast
as it can; the time until its log file holds all of it.

    python3 bench/logs.py [--mb N] [--runs N] [--no-pm2]

Runs corral (plain, and with a timestamp on every line), the same app
writing straight to a file (the limit), and PM2 7 installed from the npm
registry into a temporary prefix with its own PM2_HOME (touching nothing of
the user's), all in one run. Prints medians with min-max. Stops everything
it started, on success and on failure.
"""

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

FLOOD = r"""
import sys
line = b"x" * 99 + b"\n"
block = line * 1000
for _ in range(int(sys.argv[1])):
    sys.stdout.buffer.write(block)
sys.stdout.flush()
"""


def arg(name, default):
    if name in sys.argv:
        return int(sys.argv[sys.argv.index(name) + 1])
    return default


def wait_size(path, size, limit=300.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if os.path.getsize(path) >= size:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {path} to reach {size} bytes")


def summary(name, secs, mb):
    rates = [mb / s for s in secs]
    med = statistics.median(rates)
    print(f"{name:<40} {med:8.0f} MB/s  (min {min(rates):.0f}, max {max(rates):.0f}, n={len(rates)})")
    return med


def main():
    mb = arg("--mb", 100)
    runs = arg("--runs", 3)
    blocks = mb * 10  # 1000 lines of 100 bytes = 0.1 MB
    size = blocks * 1000 * 100
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="corral-logs-")
    flood = os.path.join(work, "flood.py")
    with open(flood, "w") as f:
        f.write(FLOOD)
    env = dict(os.environ, CORRAL_HOME=os.path.join(work, "corral"))
    pm2_home = os.path.join(work, "pm2home")
    pm2 = None
    results = {}
    try:
        # The limit: the same app writing to a file itself.
        secs = []
        for i in range(runs):
            out = os.path.join(work, f"direct{i}.log")
            t0 = time.monotonic()
            with open(out, "wb") as f:
                subprocess.run(["python3", flood, str(blocks)], stdout=f, check=True)
            secs.append(time.monotonic() - t0)
            os.remove(out)
        results["direct"] = summary("the app writing a file directly", secs, mb)

        for stamp in (False, True):
            secs = []
            for i in range(runs):
                name = f"flood{int(stamp)}{i}"
                args = [CORRAL, "start", "python3", "--name", name, "--no-autorestart"]
                if stamp:
                    args.append("--time")
                t0 = time.monotonic()
                subprocess.run(args + ["--", flood, str(blocks)], env=env, check=True, capture_output=True)
                log = os.path.join(env["CORRAL_HOME"], "logs", f"{name}-out.log")
                # --time adds "YYYY-MM-DDTHH:mm:ss: " (21 bytes) to each line.
                wait_size(log, size + (21 * blocks * 1000 if stamp else 0))
                secs.append(time.monotonic() - t0)
                subprocess.run([CORRAL, "delete", name], env=env, capture_output=True)
                os.remove(log)
            label = "corral, timestamps" if stamp else "corral"
            results[label] = summary(label, secs, mb)

        if "--no-pm2" not in sys.argv:
            prefix = os.path.join(work, "pm2")
            subprocess.run(["npm", "install", "pm2@7", "--prefix", prefix, "--no-audit", "--no-fund",
                            "--silent"], check=True)
            pm2 = os.path.join(prefix, "node_modules", ".bin", "pm2")
            penv = dict(os.environ, PM2_HOME=pm2_home)
            version = subprocess.run([pm2, "--version"], env=penv, capture_output=True,
                                     text=True).stdout.strip().splitlines()[-1]
            secs = []
            for i in range(runs):
                name = f"flood{i}"
                out = os.path.join(work, f"pm2-{i}.log")
                t0 = time.monotonic()
                subprocess.run([pm2, "start", flood, "--name", name, "--interpreter", "python3",
                                "--no-autorestart", "-o", out, "--", str(blocks)],
                               env=penv, check=True, capture_output=True)
                wait_size(out, size)
                secs.append(time.monotonic() - t0)
                subprocess.run([pm2, "delete", name], env=penv, capture_output=True)
                os.remove(out)
            results["pm2"] = summary(f"PM2 {version}", secs, mb)
        d = results["direct"]
        print(f"corral / direct: {results['corral'] / d:.2f}; with timestamps: {results['corral, timestamps'] / d:.2f}")
        if "pm2" in results:
            print(f"corral / PM2: {results['corral'] / results['pm2']:.1f}x")
    finally:
        subprocess.run([CORRAL, "kill"], env=env, capture_output=True)
        if pm2:
            subprocess.run([pm2, "kill"], env=dict(os.environ, PM2_HOME=pm2_home), capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
