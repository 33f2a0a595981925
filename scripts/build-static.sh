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
cargo build --release --target "$triple" \
  --config "target.$triple.rustflags=[\"-C\", \"target-feature=+crt-static\"]" "$@"
dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "${dir:-target}/$triple/release/corral"
