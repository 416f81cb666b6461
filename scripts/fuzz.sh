#!/usr/bin/env bash
# make fuzz: coverage-guided fuzzing with libFuzzer (the libfuzzer-sys crate) on the stable
# toolchain, without sanitizers: the targets in tests/fuzz/fuzz_targets/ are built with
# SanitizerCoverage (stable `-C passes=sancov-module` flags, as cargo-fuzz passes them) into
# target/fuzz/, then each runs for FUZZ_SECONDS starting from its committed corpus
# (tests/fuzz/corpus/<target>/) and seeds (tests/fuzz/seeds/<target>/; the bootstrap target also
# reads ../shared/fixtures/istio/ when present). Prints executions per target and in total.
# A crash or a timeout leaves its input in target/fuzz/artifacts/<target>/ and fails the run:
# reproduce it with `target/fuzz/x86_64-unknown-linux-gnu/release/<target> <file>`, fix it,
# and add a regression test next to the code.
#
# Knobs (environment):
#   FUZZ_SECONDS   seconds per target (default 60)
#   FUZZ_TARGETS   targets (default: every one)
#   FUZZ_MERGE     1 = merge what the run found into the committed corpus, minimized
#                  (libFuzzer -merge=1), to commit afterwards
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-resp_decode resp3_convert xds_resources bootstrap_yaml bootstrap_proto splitter_router}"
FUZZ_DIR="$ROOT/tests/fuzz"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
OUT="${CARGO_TARGET_DIR:-$ROOT/target}/fuzz"
BIN="$OUT/$TRIPLE/release"

command -v c++ >/dev/null 2>&1 || apt_install g++
log "building the fuzz targets (release, SanitizerCoverage)"
# --target keeps the flags off build scripts and proc macros (they would not link).
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions \
-Coverflow-checks" \
  cargo build --release --quiet --manifest-path "$FUZZ_DIR/Cargo.toml" --target-dir "$OUT" \
  --target "$TRIPLE"

total=0
failed=""
for target in $TARGETS; do
  corpus="$FUZZ_DIR/corpus/$target"
  work="$OUT/corpus/$target"
  artifacts="$OUT/artifacts/$target"
  mkdir -p "$corpus" "$work" "$artifacts"
  seeds=("$FUZZ_DIR/seeds/$target")
  if [ "$target" = bootstrap_yaml ] && [ -d "$ROOT/../shared/fixtures/istio" ]; then
    seeds+=("$ROOT/../shared/fixtures/istio")
  fi
  log "fuzzing $target for ${SECONDS_PER_TARGET}s"
  logfile="$OUT/$target.log"
  status=0
  "$BIN/$target" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "$corpus" "${seeds[@]}" \
    > "$logfile" 2>&1 || status=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$logfile" | tail -1)"
  runs="${runs:-0}"
  total=$((total + runs))
  printf '  %-16s %12s executions\n' "$target" "$runs"
  if [ "$status" -ne 0 ]; then
    failed="$failed $target"
    grep -E "^==|ERROR|panicked|Test unit written" "$logfile" | head -20 >&2 || true
  fi
  if [ "${FUZZ_MERGE:-0}" = "1" ] && [ "$status" -eq 0 ]; then
    merged="$OUT/merged/$target"
    rm -rf "$merged" && mkdir -p "$merged"
    "$BIN/$target" -merge=1 "$merged" "$corpus" "$work" >> "$logfile" 2>&1
    rm -rf "$corpus" && mv "$merged" "$corpus"
    log "$target: corpus minimized to $(ls "$corpus" | wc -l) inputs"
  fi
done
printf '  %-16s %12s executions\n' total "$total"
[ -z "$failed" ] || die "fuzzing found crashes in:$failed (inputs in $OUT/artifacts/)"
