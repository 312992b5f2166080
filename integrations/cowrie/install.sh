#!/usr/bin/env bash
# Installs the HoneyBee output plugin into a Cowrie virtualenv: the Python kit as a package,
# and the plugin module into Cowrie's output package.
#   integrations/cowrie/install.sh /path/to/cowrie-venv
set -euo pipefail
venv=${1:?usage: install.sh COWRIE_VIRTUALENV}
here=$(cd "$(dirname "$0")" && pwd)
python="$venv/bin/python"
[ -x "$python" ] || { echo "install.sh: $python not found: is $venv a virtualenv?" >&2; exit 1; }
output_dir=$("$python" -c 'import cowrie.output; print(list(cowrie.output.__path__)[0])') || {
    echo "install.sh: cowrie is not installed in $venv" >&2
    exit 1
}
# Built from a copy, so the checkout is not littered with build/ and *.egg-info.
kit_copy=$(mktemp -d)
trap 'rm -rf "$kit_copy"' EXIT
cp -r "$here/../python/." "$kit_copy"
"$python" -m pip install --quiet --no-deps --force-reinstall "$kit_copy"
install -m 0644 "$here/honeybee.py" "$output_dir/honeybee.py"
echo "installed the HoneyBee output into $output_dir; enable it with [output_honeybee] enabled = true"
