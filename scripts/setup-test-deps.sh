#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, idempotently:
#   - php-cli (the PHP forwarder's tests) and rsyslog (the benchmark harness's reference,
#     exercised by its smoke test), from Debian's packages;
#   - an unprivileged user, honeybee-test: Cowrie refuses to run as root, and CI runs as root;
#   - cargo-deny (the supply-chain check), from the crates registry;
#   - a virtualenv with Cowrie and paramiko from PyPI, made with the system interpreter
#     (/usr/bin/python3) so that user can execute it, plus the HoneyBee kit and plugin.
# The virtualenv lives in $HONEYBEE_TEST_VENV (default /opt/honeybee-test/cowrie-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${HONEYBEE_TEST_VENV:-/opt/honeybee-test/cowrie-venv}
cowrie_version=3.1.4
paramiko_version=5.1.0
test_user=honeybee-test

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
# The kit and the plugin change with the code under test: reinstall them every run.
as_root integrations/cowrie/install.sh "$venv" >/dev/null
# Pre-build twisted's plugin cache: the unprivileged user cannot write it.
as_root "$venv/bin/python" -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
as_root chmod -R a+rX "$(dirname "$venv")"
echo "setup: test dependencies ready (php $(php -r 'echo PHP_VERSION;'), cowrie $cowrie_version in $venv)"
