#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) under AddressSanitizer with LeakSanitizer on, one after the other,
# for a given time each, starting from the corpus kept in the repository (fuzz/corpus/<target>). Any crash, leak,
# failed property or timeout fails the script (after every target has had its turn); the input is saved under
# fuzz/artifacts/<target>/. Ends with one line per target: executions, executions per second, time.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     default: 60 seconds, every target
#
# New inputs found go to a scratch directory and are thrown away, so the committed corpus stays as it is; with
# FUZZ_KEEP_CORPUS=1 they are added to fuzz/corpus/<target> (minimise it afterwards: docs/fuzzing.md).
# FUZZ_NICE=19 runs the fuzzer at that niceness; FUZZ_RUNS=N stops a target after N inputs (the time stays a
# cap); FUZZ_LOG_DIR=dir keeps each target's libFuzzer log there. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# cargo-fuzz passes -Zsanitizer=address, a nightly flag; RUSTC_BOOTSTRAP lets the stable toolchain accept it.
export RUSTC_BOOTSTRAP=1
# LeakSanitizer is part of AddressSanitizer on Linux; say so explicitly, and make a leak fail the run.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

nice_cmd=()
if [ -n "${FUZZ_NICE:-}" ]; then
  nice_cmd=(nice -n "$FUZZ_NICE")
fi

build_started=$SECONDS
"${nice_cmd[@]}" cargo fuzz build -O
echo "fuzz.sh: built ${#targets[@]} targets in $((SECONDS - build_started)) s" >&2

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
summary=()
failed=()
for target in "${targets[@]}"; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus" "fuzz/artifacts/$target"
  if [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ]; then
    dirs=("$corpus")
  else
    # libFuzzer writes new inputs into the first directory only.
    mkdir -p "$scratch/$target"
    dirs=("$scratch/$target" "$corpus")
  fi
  log="${FUZZ_LOG_DIR:-$scratch}/$target.log"
  mkdir -p "$(dirname "$log")"
  runs=()
  if [ -n "${FUZZ_RUNS:-}" ]; then
    runs=(-runs="$FUZZ_RUNS")
  fi
  started=$SECONDS
  status=0
  "${nice_cmd[@]}" cargo fuzz run -O "$target" "${dirs[@]}" -- \
    -max_total_time="$seconds" "${runs[@]}" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    >"$log" 2>&1 || status=$?
  elapsed=$((SECONDS - started))
  execs="$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)"
  rate="$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n 1)"
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "fuzz.sh: $target FAILED (exit $status); the end of its log:" >&2
    tail -n 60 "$log" >&2
  fi
  line="$(printf '%-26s %-6s %12s execs %8s exec/s %6s s' "$target" \
    "$([ "$status" -eq 0 ] && echo ok || echo FAILED)" "${execs:-?}" "${rate:-?}" "$elapsed")"
  echo "fuzz.sh: $line" >&2
  summary+=("$line")
done

echo "fuzz.sh: ${seconds} s per target under AddressSanitizer + LeakSanitizer:"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs under fuzz/artifacts/)"
  exit 1
fi
echo "fuzz.sh: OK"
