#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after another and prints how many inputs each one
# executed (see docs/fuzzing.md).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target (default: all) for SECONDS (default 600)
#   scripts/fuzz.sh --smoke                 each target for a few seconds from its seeds (CI)
#
# One fuzzer at a time, single process: the machine is shared. New corpus entries go to
# fuzz/corpus/<target> (not committed); the seeds in fuzz/seeds/<target> are only read.
# Crashes, timeouts and out-of-memory inputs land in fuzz/artifacts/<target>/; the run
# stops there, or goes on for its full time with FUZZ_KEEP_GOING=1 (libFuzzer's fork mode,
# still one worker). Logs: fuzz/logs/<target>.log. Exit status: non-zero if any target failed.
#
# The fuzz build needs nightly flags; RUSTC_BOOTSTRAP=1 allows them on the stable toolchain.
# All code under test is safe Rust, so no sanitizer is used (`-s none`): panics, overflow
# checks and debug assertions are what catch bugs, and executions are about twice as fast.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

seconds=600
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
  smoke=1
  seconds="${FUZZ_SMOKE_SECONDS:-5}"
  shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds="$1"
  shift
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# Built once, then the binaries are run directly (so that editing the source while a long run
# goes on changes nothing under it). FUZZ_BIN_DIR: run binaries from there instead, unbuilt.
bin_dir="${FUZZ_BIN_DIR:-}"
if [[ -z "$bin_dir" ]]; then
  if [[ ${#targets[@]} -eq 1 ]]; then
    cargo fuzz build -s none "${targets[0]}"
  else
    cargo fuzz build -s none
  fi
  bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
fi

mkdir -p fuzz/logs
rss="${FUZZ_RSS_LIMIT_MB:-2048}"
summary=()
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  corpora=("fuzz/corpus/$t")
  [[ -d "fuzz/seeds/$t" ]] && corpora+=("fuzz/seeds/$t")
  opts=(-max_total_time="$seconds" -rss_limit_mb="$rss" -timeout="${FUZZ_TIMEOUT:-10}"
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/")
  if [[ "${FUZZ_KEEP_GOING:-0}" == 1 && $smoke == 0 ]]; then
    opts+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  log="fuzz/logs/$t.log"
  echo "fuzz: $t for ${seconds}s (log: $log)" >&2
  start=$(date +%s)
  marker="fuzz/artifacts/$t/.started"
  touch "$marker"
  rc=0
  "$bin_dir/$t" "${opts[@]}" "${corpora[@]}" >"$log" 2>&1 </dev/null || rc=$?
  took=$(( $(date +%s) - start ))
  # In-process mode prints `stat::number_of_executed_units`; fork mode only its progress
  # lines (`#N: cov: ...`), of which the last counts every job's executions.
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n1)
  if [[ -z "$execs" ]]; then
    execs=$(sed -n 's/^#\([0-9][0-9]*\)[:[:space:]].*/\1/p' "$log" | tail -n1)
  fi
  found=$(find "fuzz/artifacts/$t" -type f -newer "$marker" | wc -l)
  if [[ $rc -ne 0 || $found -ne 0 ]]; then
    result="FAILED (exit $rc, $found artifact(s) in fuzz/artifacts/$t)"
    status=1
  else
    result="ok"
  fi
  summary+=("$(printf '%-22s %6ss %12s executions  %s' "$t" "$took" "${execs:-?}" "$result")")
done

echo
printf '%s\n' "${summary[@]}"
exit $status
