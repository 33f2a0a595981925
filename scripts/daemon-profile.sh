#!/bin/sh
# Regenerates scripts/daemon-layout.ld: runs a daemon of the profiling build
# under callgrind through a day's work, then scripts/daemon-layout.py (which
# keeps what the file in place already holds).
#
#     sh scripts/daemon-profile.sh
#
# Needs valgrind. Works in a temporary directory; the apps are sleep(1) and
# sh(1); every process it starts is stopped by pid.
set -eu
cd "$(dirname "$0")/.."
# Static, as build-static.sh links it: its start-up code is the C library's
# static one.
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --profile profiling --quiet --target "$triple" \
  --config "target.$triple.rustflags=[\"-C\", \"target-feature=+crt-static\"]"
dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
C="${dir:-target}/$triple/profiling/corral"
C=$(cd "$(dirname "$C")" && pwd)/corral
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cat >"$w/vg.sh" <<EOF
#!/bin/sh
exec valgrind -q --tool=callgrind --demangle=no --callgrind-out-file=$w/cg.%p.out $C "\$@"
EOF
chmod +x "$w/vg.sh"
pid_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)'"$1"')'; }
# A daemon killed with its app: the profiled one finds its leftovers.
CORRAL_HOME=$w/stale CORRAL_BIN=$C "$C" start /bin/sleep --name st -- 1000 >/dev/null
dp=$(CORRAL_HOME=$w/stale "$C" ping | pid_of "['pid']")
ap=$(CORRAL_HOME=$w/stale "$C" jlist | pid_of "[0]['pid']")
kill -9 "$dp" "$ap"
export CORRAL_HOME="$w/home" CORRAL_BIN="$w/vg.sh"
python3 - "$w" <<'EOF'
import json, sys
w = sys.argv[1]
def app(name, **o):
    return dict(name=name, interpreter="none", out_file="/dev/null", error_file="/dev/null", **o)
json.dump({"apps": [app(f"m{i}", script="/bin/sleep", args=["1000"]) for i in range(100)]},
          open(f"{w}/c100.json", "w"))
json.dump({"apps": [dict(name=f"e{i}", script="/bin/sh", interpreter="none", env={"A": "1"},
                         args=["-c", "echo hi; echo err >&2; sleep 1000"], max_memory_restart="100M")
                    for i in range(3)]}, open(f"{w}/c3.json", "w"))
EOF
{
  "$C" ping
  "$C" start "$w/c100.json"
  "$C" start "$w/c3.json"
  "$C" start /bin/sleep --name s1 -- 1000
  "$C" start /bin/sh --name crash --max-restarts 3 -- -c "echo out; echo err >&2; exit 3"
  "$C" start /bin/sh --name talk -- -c "while :; do echo line; sleep 0.2; done"
  "$C" start /nonexistent/script --name bad || true
  "$C" restart nosuchapp || true
  "$C" describe nosuchapp || true
  timeout 2 "$C" logs talk || true
  "$C" jlist
  "$C" list
  "$C" describe m1
  "$C" restart m2
  "$C" reload m3
  "$C" stop m4
  "$C" start m4
  "$C" logs e0 --nostream --lines 5
  "$C" save
  "$C" prettylist
  "$C" flush
  "$C" reset m5
  "$C" scale m6 2
  "$C" delete m7
  "$C" sendSignal SIGUSR1 m8
  "$C" env 0
  "$C" stop all
  "$C" jlist
  "$C" resurrect
  "$C" jlist
  "$C" delete all
  "$C" kill
} >/dev/null 2>&1
# The daemon and its spawner write their profiles as they exit (the
# launcher's is there already).
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ "$(ls "$w"/cg.*.out 2>/dev/null | wc -l)" -ge 3 ] && break
  sleep 1
done
cp scripts/daemon-layout.ld "$w/old.ld"
python3 scripts/daemon-layout.py "$w/old.ld" "$w"/cg.*.out >scripts/daemon-layout.ld
echo "scripts/daemon-layout.ld: $(wc -l <scripts/daemon-layout.ld) lines"
