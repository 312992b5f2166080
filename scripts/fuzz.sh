#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets) for a bounded time each:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET…]      (default 20 s, every target)
# Seeds are the golden vectors in fuzz/seeds; what libFuzzer finds is kept in fuzz/corpus
# (not committed) and reused by the next run. A crash fails the script and leaves its
# input in fuzz/artifacts. cargo-fuzz is installed when missing; the stable toolchain is
# told to accept libFuzzer's flags with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope_decoder ingest_line)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "fuzz: $target for ${seconds}s"
    log="corpus/$target.log"
    if ! cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
    grep -E "^Done [0-9]+ runs" "$log"
done
