#!/usr/bin/env bash
# Rebuilds crates/geoip/data/country.bin (the bundled country table), country-version.txt
# and country-samples.txt (source addresses and countries the tests check the table against) from DB-IP's
# "IP to Country Lite" database (CC BY 4.0) as packaged on npm by the ip-location-db project.
#
#   crates/geoip/data/build-country-table.sh [NPM_VERSION]
#
# Needs npm (for `npm pack`) and python3. The npm version pins the data: the same version
# gives the same country.bin byte for byte. After a rebuild, update the version and date in
# data/README.md, check the licence file in the package is still CC BY 4.0, and run
# `cargo test -p honeybee-geoip` (its known-address tests may need new addresses if the
# data moved).
set -euo pipefail

package="@ip-location-db/dbip-country"
version="${1:-2.3.2026060120}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$package@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work"

# The licence travels with the data; refuse to build from a package that changed it.
if ! grep -q "Creative Commons Attribution 4.0" "$work/package/DBIP-LICENSE"; then
    echo "the DBIP-LICENSE in $package@$version is not CC BY 4.0: check it by hand" >&2
    exit 1
fi

# The npm version is 2.3.YYYYMMDDHH: the data's date is in it.
stamp="${version##*.}"
date="${stamp:0:4}-${stamp:4:2}-${stamp:6:2}"
description="DB-IP IP to Country Lite $date (npm $package $version)"
python3 "$here/build_country_table.py" \
    "$work/package/dbip-country-ipv4-num.csv" \
    "$work/package/dbip-country-ipv6-num.csv" \
    "$description" \
    "$here/country.bin" \
    "$here/country-samples.txt"
# The crate's COUNTRY_DATABASE_VERSION is this file (include_str!, so no trailing newline).
printf '%s' "$description" >"$here/country-version.txt"
