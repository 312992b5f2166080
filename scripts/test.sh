#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, then every unit,
# integration and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 is required: the end-to-end tests run the integration guide's Python snippet" >&2
    exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
