#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every unit,
# integration and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 is required: the end-to-end tests run the integration guide's Python snippet" >&2
    exit 1
fi

# php-cli, the unprivileged Cowrie user and the Cowrie virtualenv (idempotent, quick when present).
scripts/setup-test-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Supply chain: licences, duplicate crates, sources (deny.toml). The advisory database needs
# the network: docs/security.md says how to run that check.
cargo deny --locked check licenses bans sources
# A short fuzz run of the wire parsers (scripts/fuzz.sh SECONDS for longer ones).
scripts/fuzz.sh 15
# Unit, integration and end-to-end tests (no doc-tests: the crates have none). The output is
# kept so the totals can be printed as the closing line.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "all tests: %d passed, %d failed\n", passed, failed }' "$log"
