#!/usr/bin/env bash
# Runs the benchmark scenarios of docs/performance.md against a release build.
#   scripts/bench.sh            every scenario at full size (about 10 minutes, 5 GB of disk)
#   scripts/bench.sh a c        only the named scenarios (a b c d e)
# Reports go to stdout and, as JSON, to target/bench/<scenario>.json.
set -euo pipefail
cd "$(dirname "$0")/.."

# rsyslog (the reference of scenario a) comes with the test dependencies.
scripts/setup-test-deps.sh
cargo build --release --locked -p honeybee -p honeybee-bench
bench=target/release/honeybee-bench
mkdir -p target/bench
# Scenario (d) holds 10,000 connections on each side.
ulimit -n "$(ulimit -Hn)"

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(a b c d e)
for scenario in "${scenarios[@]}"; do
    echo "== scenario $scenario"
    case "$scenario" in
        a) "$bench" --json target/bench/a.json pipeline --nodes 1 --pots 16 --events 1000000 --compare-rsyslog ;;
        b) "$bench" --json target/bench/b.json pipeline --nodes 100 --pots 4 --events 1000000 ;;
        c) "$bench" --json target/bench/c.json pipeline --nodes 1 --pots 4 --events 300000 --rate 10000
           "$bench" --json target/bench/c-retention.json pipeline --nodes 1 --pots 4 --events 300000 --rate 10000 --retention-churn ;;
        d) "$bench" --json target/bench/d.json connections --nodes 10000 ;;
        e) "$bench" --json target/bench/e.json query --events 10000000 ;;
        *) echo "unknown scenario $scenario (a b c d e)" >&2; exit 2 ;;
    esac
done
