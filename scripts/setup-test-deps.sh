#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently:
#   - php-cli (the PHP forwarder's tests) and rsyslog (the benchmark harness's reference,
#     exercised by its smoke test), from Debian's packages;
#   - an unprivileged user, honeybee-test: Cowrie refuses to run as root, and CI runs as root;
#   - a normal user with a home and subordinate ids, honeybee-rootless, and uidmap (newuidmap,
#     newgidmap): README's commands run as a normal user (crates/cli/tests/rootless_pots.rs);
#   - cargo-deny (the supply-chain check), from the crates registry;
#   - a virtualenv with Cowrie and paramiko from PyPI, made with the system interpreter
#     (/usr/bin/python3) so that user can execute it, plus the HoneyBee kit and plugin;
#   - a second virtualenv with schemathesis from PyPI, which checks the running Core's REST
#     API against its own OpenAPI document (crates/cli/tests/openapi_contract.rs). It is kept
#     apart from Cowrie's so neither pins the other's dependencies.
# The virtualenvs live in $HONEYBEE_TEST_VENV (default /opt/honeybee-test/cowrie-venv) and
# $HONEYBEE_TEST_SCHEMATHESIS_VENV (default /opt/honeybee-test/schemathesis-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${HONEYBEE_TEST_VENV:-/opt/honeybee-test/cowrie-venv}
cowrie_version=3.1.4
paramiko_version=5.1.0
test_user=honeybee-test
schemathesis_venv=${HONEYBEE_TEST_SCHEMATHESIS_VENV:-/opt/honeybee-test/schemathesis-venv}
# Pinned: its checks and CLI options change between releases, and the contract test passes
# the options of this one.
schemathesis_version=4.32.5

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v php >/dev/null 2>&1; then
    echo "setup: installing php-cli"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq php-cli >/dev/null
fi

if [ ! -x /usr/sbin/rsyslogd ]; then
    echo "setup: installing rsyslog"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog >/dev/null
fi

# cargo-deny checks licences, duplicate crates and sources (deny.toml); built from the
# crates registry once, pinned so every machine checks with the same rules.
cargo_deny_version=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$cargo_deny_version"; then
    echo "setup: installing cargo-deny $cargo_deny_version"
    cargo install --quiet --locked cargo-deny --version "$cargo_deny_version"
fi

if ! id "$test_user" >/dev/null 2>&1; then
    echo "setup: creating user $test_user"
    as_root useradd --system --no-create-home --shell /usr/sbin/nologin "$test_user"
fi

if [ ! -x /usr/bin/newuidmap ]; then
    echo "setup: installing uidmap"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq uidmap >/dev/null
fi

rootless_user=honeybee-rootless
if ! id "$rootless_user" >/dev/null 2>&1; then
    echo "setup: creating user $rootless_user"
    as_root useradd --create-home --shell /bin/bash "$rootless_user"
fi
# useradd gives a new normal user subordinate ids where login.defs says so; make sure.
if ! grep -q "^$rootless_user:" /etc/subuid 2>/dev/null || ! grep -q "^$rootless_user:" /etc/subgid 2>/dev/null; then
    echo "setup: giving $rootless_user subordinate ids"
    as_root usermod --add-subuids 700000-765535 --add-subgids 700000-765535 "$rootless_user"
fi
# Its pots live under its home: others (the pots' subordinate ids) must pass through it.
as_root chmod 755 "$(getent passwd "$rootless_user" | cut -d: -f6)"

marker="$venv/.honeybee-cowrie-$cowrie_version-paramiko-$paramiko_version"
if [ ! -f "$marker" ]; then
    echo "setup: creating $venv with cowrie $cowrie_version"
    as_root rm -rf "$venv"
    as_root mkdir -p "$(dirname "$venv")"
    as_root /usr/bin/python3 -m venv "$venv"
    as_root "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "cowrie==$cowrie_version" "paramiko==$paramiko_version"
    as_root touch "$marker"
fi
schemathesis_marker="$schemathesis_venv/.honeybee-schemathesis-$schemathesis_version"
if [ ! -f "$schemathesis_marker" ]; then
    echo "setup: creating $schemathesis_venv with schemathesis $schemathesis_version"
    as_root rm -rf "$schemathesis_venv"
    as_root mkdir -p "$(dirname "$schemathesis_venv")"
    as_root /usr/bin/python3 -m venv "$schemathesis_venv"
    as_root "$schemathesis_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$schemathesis_version"
    as_root touch "$schemathesis_marker"
fi

# The kit and the plugin change with the code under test: reinstall them every run.
as_root integrations/cowrie/install.sh "$venv" >/dev/null
# Pre-build twisted's plugin cache: the unprivileged user cannot write it.
as_root "$venv/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
as_root chmod -R a+rX "$(dirname "$venv")" "$(dirname "$schemathesis_venv")"
echo "setup: test dependencies ready (php $(php -r 'echo PHP_VERSION;'), cowrie $cowrie_version in $venv, schemathesis $schemathesis_version in $schemathesis_venv)"
