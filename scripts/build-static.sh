#!/bin/sh
# The static release binary of corral, for this host or for TRIPLE:
#
#     sh scripts/build-static.sh [TRIPLE] [cargo build options...]
#
# prints the binary's path as its last line on stdout (cargo's own output goes
# to stderr), so `bin=$(sh scripts/build-static.sh --quiet)` works.
#
# Static (`+crt-static`) because FROM-scratch containers and embedded boxes
# have no libc to share, and corral reads users and groups from /etc/passwd
# and /etc/group itself, never through NSS. The target is always named with
# --target, so the flag reaches corral only and not the build-time proc
# macros (serde_derive), which cannot be linked statically. Without TRIPLE it
# is this host's own (`rustc -vV`), so the same command works on x86_64,
# aarch64 and armv7, glibc or musl. The binary lands in
# <target dir>/<triple>/release/corral; the target dir honours
# CARGO_TARGET_DIR and .cargo/config.toml (cargo metadata says where).
set -eu
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
triple=$host
case "${1-}" in
"" | -*) ;;
*)
  triple=$1
  shift
  ;;
esac
if [ -z "$triple" ]; then
  echo "build-static.sh: cannot tell this host's target triple from rustc -vV" >&2
  exit 1
fi
# Two link options make the binary smaller where they are known to work:
# building for this host with glibc 2.36 or later (a static binary carries
# the start-up code that applies its relocations, so the machine it later
# runs on does not matter). Relative relocations packed (DT_RELR: ~80 KB
# less), and no .eh_frame_hdr (~35 KB; it only serves the backtrace of a
# panic under RUST_BACKTRACE: with panic = "abort" nothing unwinds). The
# result is run to check it; if it cannot be linked or does not run, it is
# built again without them. Not for musl or another triple (their C
# library's version is not known here).
small=no
case $triple in
"$host")
  case $triple in
  *-linux-gnu*)
    v=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
    major=${v%% *}
    minor=${v##* }
    if [ -n "$v" ] && { [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 36 ]; }; }; then
      small=yes
    fi
    ;;
  esac
  ;;
esac
static='"-C", "target-feature=+crt-static"'
smaller='"-C", "link-arg=-Wl,-z,pack-relative-relocs", "-C", "link-arg=-Wl,--no-eh-frame-hdr"'
# And the code the daemon runs laid out first (scripts/daemon-layout.py says
# why), so that a daemon has less of the binary resident.
layout="$(pwd)/scripts/daemon-layout.ld"
case $layout in
*[\"\\]*) ;;
*)
  # Its checksum in the flags, so that cargo links again when it changes.
  sum=$(cksum <"$layout" | cut -d' ' -f1)
  smaller="$smaller, \"-C\", \"link-arg=-T$layout\", \"-C\", \"link-arg=-Wl,--defsym=corral_layout_$sum=0\""
  ;;
esac
build() {
  flags=$1
  shift
  cargo build --release --target "$triple" --config "target.$triple.rustflags=[$flags]" "$@"
}
dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${dir:-target}/$triple/release/corral"
if [ "$small" = yes ]; then
  if ! { build "$static, $smaller" "$@" && "$bin" --version >/dev/null 2>&1; }; then
    echo "build-static.sh: the smaller link failed or does not run; building without it" >&2
    build "$static" "$@"
  fi
else
  build "$static" "$@"
fi
echo "$bin"
