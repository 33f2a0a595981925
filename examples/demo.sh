#!/bin/sh
# The quick start: build corral, start the demo app under the daemon, show it.
set -eu
cd "$(dirname "$0")/.."
# The static release binary for this host; the script prints its path (it
# honours CARGO_TARGET_DIR).
corral=$(sh scripts/build-static.sh --quiet)
$corral start examples/demo-app.sh --name demo --time
# Give it two ticks so there is something in its log.
i=0
while [ "$i" -lt 30 ] && ! grep -q "tick 2" "$($corral jlist | sed -n 's/.*"pm_out_log_path":"\([^"]*\)".*/\1/p')" 2>/dev/null; do
  i=$((i + 1)); sleep 0.1
done
echo
$corral describe demo | head -8
echo
echo "The demo keeps running under the daemon. Try:"
echo "  $corral ls"
echo "  $corral restart demo"
echo "  $corral kill          # stop the apps and the daemon"
