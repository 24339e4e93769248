#!/usr/bin/env bash
# Where the CPU of an S1 push-all goes: runs scripts/bench-s1.sh, records the server's (or the simulator's) call
# stacks with `perf` over the measured window only (orchard-sim marks it with the files window-open and
# window-closed in the bench directory), then sums the samples by what they were doing
# (scripts/profile_categories.py).
# Usage: scripts/profile-s1.sh [sqlite|postgres] [N] [server|simulator]
# Needs `perf` (linux-perf) and python3. perf slows the measured process down: read the shares, not the times.
# Resolving the stacks (`perf script`) takes a few minutes for a 3,000-iPad run.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}; n=${2:-3000}; who=${3:-server}
command -v perf > /dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
dir=${ORCHARD_BENCH_S1_DIR:-target/bench-s1}/$backend
mkdir -p "$dir"
out=${ORCHARD_PROFILE_OUT:-target/profile-s1}
mkdir -p "$out"
rm -f "$dir/window-open" "$dir/window-closed"
bash scripts/bench-s1.sh "$backend" "$n" > "$out/bench.log" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true' EXIT
# The setup phase also opens a window-less session; wait for the measured one.
until grep -q "measured run" "$out/bench.log" 2>/dev/null; do
  kill -0 $bench 2>/dev/null || { cat "$out/bench.log" >&2; exit 1; }
  sleep 0.1
done
until [ -e "$dir/window-open" ]; do
  kill -0 $bench 2>/dev/null || { cat "$out/bench.log" >&2; exit 1; }
  sleep 0.01
done
if [ "$who" = simulator ]; then
  pid=$(pgrep -n -f "orchard-sim bench-push")
else
  pid=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[\"pid\"])" "$dir/server.json")
fi
perf record -q -F 999 --call-graph dwarf,32768 -o "$out/perf.data" -p "$pid" 2> "$out/perf.log" &
perf_pid=$!
until [ -e "$dir/window-closed" ]; do sleep 0.01; done
kill -INT $perf_pid; wait $perf_pid || true
wait $bench
grep -E "^(every result|server CPU|S1 )" "$out/bench.log"
echo "-- resolving stacks (perf script) …"
perf script -i "$out/perf.data" -F comm,tid,ip,sym 2> /dev/null > "$out/perf.script"
python3 scripts/profile_categories.py "$who" "$out/perf.script"
