#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers and rewriters (cargo-fuzz/libFuzzer).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 600)
#   scripts/fuzz.sh --smoke [TARGET...]     the whole set within 60 s, for CI
#
# Targets live in fuzz/fuzz_targets/ (aws_chunked, stream_opener,
# xml, upload_id, range, admission, classify, delete_objects); fuzz/README.md
# says what each checks.
# Every target runs alone, single-threaded (-jobs=1 -workers=1), on a working
# copy of its committed seeds (fuzz/work-corpus/<target>/, ignored by git),
# so runs never grow fuzz/corpus/. Prints executions per second, runs and
# crashes per target; exits non-zero if any target crashed (the inputs are
# left in fuzz/artifacts/<target>/).
#
# Build time: the first build compiles both crates and every dependency with
# sanitizer instrumentation in a target dir of its own (fuzz/target/): about
# 10 minutes on the 2-core machine, 12-25 s per target after a change to
# proxy/ or operator/, and a few seconds when nothing changed.
#
# Needs cargo-fuzz (installed from crates.io if missing) and a nightly
# toolchain; without nightly, stable is used with RUSTC_BOOTSTRAP=1 (libFuzzer
# needs -Zsanitizer and other unstable flags).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
FUZZ="$ROOT/fuzz"
ALL_TARGETS=(aws_chunked stream_opener xml upload_id range admission classify delete_objects)

SMOKE=0
SECONDS_PER_TARGET=600
if [[ ${1:-} == --smoke ]]; then
    SMOKE=1
    shift
elif [[ ${1:-} =~ ^[0-9]+$ ]]; then
    SECONDS_PER_TARGET=$1
    shift
fi
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL_TARGETS[@]}")
if [[ $SMOKE == 1 ]]; then
    # 60 s in total for an already built set: the build is not counted, and
    # each target gets an equal share less a second of start-up.
    SECONDS_PER_TARGET=$((60 / ${#TARGETS[@]} - 1))
    ((SECONDS_PER_TARGET >= 1)) || SECONDS_PER_TARGET=1
fi

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    CARGO=(cargo +nightly)
else
    echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    CARGO=(cargo)
fi

cd "$FUZZ"
# FUZZ_NO_BUILD=1 runs the binaries already built (while proxy/ or operator/
# are mid-edit and do not compile, say).
if [[ ${FUZZ_NO_BUILD:-0} != 1 ]]; then
    for t in "${TARGETS[@]}"; do
        "${CARGO[@]}" fuzz build "$t"
    done
fi
BIN="$FUZZ/target/x86_64-unknown-linux-gnu/release"

status=0
summary=()
for t in "${TARGETS[@]}"; do
    work="$FUZZ/work-corpus/$t"
    artifacts="$FUZZ/artifacts/$t"
    logs="$FUZZ/work-corpus/logs/$t"
    mkdir -p "$work" "$artifacts" "$logs"
    cp -n "$FUZZ/corpus/$t"/* "$work"/ 2>/dev/null || true
    before=$(find "$artifacts" -maxdepth 1 -type f | wc -l)
    # libFuzzer's -jobs mode writes the worker's output to fuzz-0.log in the
    # current directory; run from the log dir so it lands there.
    rm -f "$logs/fuzz-0.log"
    (
        cd "$logs"
        "$BIN/$t" "$work" -jobs=1 -workers=1 -max_total_time="$SECONDS_PER_TARGET" \
            -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
            >"$logs/parent.log" 2>&1 || true
    )
    log="$logs/fuzz-0.log"
    [[ -f $log ]] || log="$logs/parent.log"
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    corpus=$(find "$work" -maxdepth 1 -type f | wc -l)
    after=$(find "$artifacts" -maxdepth 1 -type f | wc -l)
    crashes=$((after - before))
    if grep -qE '^==[0-9]+== ?ERROR|deadly signal|panicked at' "$log" && ((crashes == 0)); then
        crashes=1
    fi
    line=$(printf '%-14s %8s exec/s %12s runs %5s s  corpus %5s  crashes %s' \
        "$t" "${eps:-?}" "${runs:-?}" "$SECONDS_PER_TARGET" "$corpus" "$crashes")
    echo "$line"
    summary+=("$line")
    if ((crashes > 0)); then
        status=1
        grep -m1 -A3 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)' "$log" >&2 || true
        ls -t "$artifacts" | head -3 | sed "s|^|  input: $artifacts/|" >&2
    fi
done

echo
echo "target             exec/s         runs  time   corpus    crashes"
printf '%s\n' "${summary[@]}"
exit $status
