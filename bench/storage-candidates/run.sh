#!/usr/bin/env bash
# Builds the harness and runs the named candidates (default: all) one process after the
# other on the same corpus, keeping each report in target/runs/. docs/storage.md has the
# command lines of the published numbers.
#
#   bench/storage-candidates/run.sh [candidate...]
#   EVENTS=10000000 CORPUS=pipeline WORK=/var/tmp/storage bench/storage-candidates/run.sh parquet
set -euo pipefail
cd "$(dirname "$0")"
events=${EVENTS:-1000000}
corpus=${CORPUS:-query}
work=${WORK:-$(mktemp -d)}
extra=${EXTRA:-}
cargo build --release --locked -j "${JOBS:-2}"
binary="${CARGO_TARGET_DIR:-target}/release/storage-candidates"
mkdir -p target/runs
candidates=("$@")
[ ${#candidates[@]} -gt 0 ] || candidates=(today sqlite-parts parquet parquet-indexed fjall)
for candidate in "${candidates[@]}"; do
    report="target/runs/$candidate-$corpus-$events.txt"
    dir="$work/$candidate-$corpus-$events"
    rm -rf "$dir"
    {
        echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# $binary --candidate $candidate --corpus $corpus --events $events --dir $dir $extra"
        # shellcheck disable=SC2086
        "$binary" --candidate "$candidate" --corpus "$corpus" \
            --events "$events" --dir "$dir" $extra
        echo "# done $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)"
    } 2>&1 | tee "$report"
    rm -rf "$dir"
done
