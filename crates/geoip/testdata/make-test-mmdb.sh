#!/usr/bin/env bash
# Regenerates the test .mmdb files in crates/geoip/testdata with PyPI's mmdb-writer (MIT)
# in a throw-away virtualenv. The files hold made-up records (make_test_mmdb.py says which
# test needs each); rerun only when a test needs a new record.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(mktemp -d)"
trap 'rm -rf "$venv"' EXIT

python3 -m venv "$venv"
"$venv/bin/pip" install --quiet "mmdb-writer==0.2.7" "netaddr==1.3.0"
"$venv/bin/python" "$here/make_test_mmdb.py" "$here"
ls -l "$here"/*.mmdb
