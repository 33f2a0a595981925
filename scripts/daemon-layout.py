#!/usr/bin/env python3
"""Writes scripts/daemon-layout.ld: the code the daemon runs, placed first.

    python3 scripts/daemon-layout.py [OLD.ld] CALLGRIND_OUT... > scripts/daemon-layout.ld

The daemon runs a small part of the binary (the command line, the client,
`startup`, most of the C library are never called in it), but the kernel
maps a file's pages 64 KiB at a time around each fault, so code the daemon
runs spread over the whole text segment makes all of it resident. The
linker script this writes gathers, before the rest of `.text`:

1. every function a daemon ran under `valgrind --tool=callgrind
   --demangle=no` (the files given; the daemon's own and its launcher's),
   Rust symbols matched without their hash (it changes with the profile and
   the compiler), C library ones by the archive member that holds them
   (with the other builds of a string function of the same family: the one
   the C library picks depends on the CPU);
2. then the rest of the daemon's own modules, so that code the profile did
   not run falls near it.

To regenerate, with the profiling build (symbols kept):

    cargo build --profile profiling
    export CORRAL_BIN=$PWD/vg.sh    # exec valgrind --tool=callgrind
                                    # --demangle=no --callgrind-out-file=cg.%p
                                    # target/profiling/corral "$@"
    # ... start apps, list, describe, restart, reload, stop, delete, logs,
    # save, resurrect, kill ...
    python3 scripts/daemon-layout.py old.ld cg.* > scripts/daemon-layout.ld

(scripts/daemon-profile.sh does all this.) With OLD.ld, what it placed is
kept: the union of several runs.

A name that no longer exists matches nothing: a stale file costs memory,
never correctness. build-static.sh links with it where it links at all
(GNU ld and lld both read `INSERT BEFORE`).
"""

import os
import re
import subprocess
import sys

# The daemon's own modules (legacy-mangled prefixes), and destructors.
WARM = [
    "_ZN6corral6daemon*",
    "_ZN6corral5spawn*",
    "_ZN6corral7spawner*",
    "_ZN6corral5state*",
    "_ZN6corral7process*",
    "_ZN6corral3sys*",
    "_ZN6corral4logs*",
    "_ZN6corral6rotate*",
    "_ZN6corral4poll*",
    "_ZN6corral6procfs*",
    "_ZN6corral6timers*",
    "_ZN6corral5watch*",
    "_ZN6corral7channel*",
    "_ZN6corral7cluster*",
    "_ZN6corral6notify*",
    "_ZN6corral6reaper*",
    "_ZN6corral6listen*",
    "_ZN6corral7journal*",
    "_ZN6corral4dump*",
    "_ZN6corral3app*",
    "_ZN6corral7options*",
    "_ZN6corral8protocol*",
    "_ZN6corral3bus*",
    "_ZN6corral6cgroup*",
    "_ZN6corral5users*",
    "_ZN6corral4cron*",
    "_ZN6corral8timefmt*",
    "_ZN4core3ptr*drop_in_place*",
    "_RINvNtC*_4core3ptr13drop_in_place*",
]

# Run by the daemon but mostly not: the command line's dispatch, whose first
# lines send `corral daemon` on. Last, after the warm code.
LAST = ["_ZN6corral3cli3run17h*"]

# C functions needed but not run in the profile: mremap grows a big block
# (realloc); the spawner's (valgrind does not follow it, see spawner.rs).
FUNCTIONS = ["mremap", "recv", "recvmsg", "getppid", "dup3", "execve"]

# String functions the C library builds several times, one per CPU level:
# the AVX ones of a family ran are all kept (valgrind's CPU has no AVX-512).
FAMILY = re.compile(r"-(sse2|ssse3|sse4_?\d?|avx2?|evex(512)?|avx512)(-|\.o$)")


def archive_members(lib):
    """{symbol: member} of one static library (`cc -print-file-name`)."""
    path = subprocess.run(
        ["cc", f"-print-file-name={lib}"], capture_output=True, text=True
    ).stdout.strip()
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.startswith(b"!<arch>"):
        # A linker script (glibc's libm.a): its first archive.
        found = re.findall(rb"\S+\.a\b", head)
        if found:
            path = os.path.join(os.path.dirname(path), os.path.basename(found[0].decode()))
    out = subprocess.run(["nm", "-A", path], capture_output=True, text=True).stdout
    members, all_members = {}, set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[-2] not in "tTwWiI":
            continue
        member = parts[0].split(":")[-2]
        all_members.add(member)
        members.setdefault(parts[-1], member)
    return members, all_members


def functions(files):
    names = set()
    for f in files:
        with open(f, errors="replace") as fh:
            for line in fh:
                m = re.match(r"^c?fn=\(\d+\) (.+)$", line.rstrip("\n"))
                if m:
                    names.add(re.sub(r"'\d+$", "", m.group(1)))
    return sorted(names)


def main():
    libc, libc_all = archive_members("libc.a")
    libm, libm_all = archive_members("libm.a")
    sections, members, seen = [], [], set()

    def section(p):
        if p not in seen:
            seen.add(p)
            sections.append(f"*(.text.{p} .text.unlikely.{p})")

    def member(lib, m):
        if (lib, m) not in seen:
            seen.add((lib, m))
            members.append(f"*{lib}*.a:{m}(.text .text.*)")

    # A layout given (the one in use) is kept: one run of a daemon does not
    # take every path, and what an earlier one took is still worth having.
    for f in [a for a in sys.argv[1:] if a.endswith(".ld")]:
        with open(f) as fh:
            for line in fh:
                m = re.match(r"^\s+\*\(\.text\.(\S+) ", line)
                if m:
                    section(m.group(1))
                m = re.match(r"^\s+\*(lib[cm])\*\.a:(\S+)\(", line)
                if m:
                    member(m.group(1), m.group(2))
    for name in functions([a for a in sys.argv[1:] if not a.endswith(".ld")]):
        if name.startswith(("0x", "(")):
            continue
        plain = re.sub(r"(\.llvm\.\d+|\.\d+)+$", "", name)
        if plain.startswith("_ZN"):
            section(re.sub(r"17h[0-9a-f]{16}E$", "17h", plain) + "*")
            continue
        if plain.startswith("_R"):
            section(plain + "*")
            continue
        base = re.sub(r"\.(part|constprop|isra|cold)\.\d+.*$", "", name)
        for lib, syms, every in (("libc", libc, libc_all), ("libm", libm, libm_all)):
            m = syms.get(name) or syms.get(base)
            if m:
                member(lib, m)
                fam = FAMILY.search(m)
                if fam:
                    stem = m[: fam.start()]
                    for other in sorted(every):
                        if other.startswith(stem + "-") and re.search(r"-(avx|evex)", other):
                            member(lib, other)
                break
        else:
            section(plain)
    for f in FUNCTIONS:
        if f in libc:
            member("libc", libc[f])
    last = [f"*(.text.{p} .text.unlikely.{p})" for p in LAST]
    hot = [s for s in sections if s not in last]
    warm = [f"*(.text.{w} .text.unlikely.{w})" for w in WARM]
    hot = [s for s in hot if s not in warm]
    print("/* Generated by scripts/daemon-layout.py: the code the daemon runs, first. */")
    print("SECTIONS\n{\n  .text.daemon :\n  {")
    for line in hot + members + warm + last:
        print(f"    {line}")
    print("  }\n}\nINSERT BEFORE .text;")


if __name__ == "__main__":
    main()
