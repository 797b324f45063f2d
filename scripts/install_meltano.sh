#!/usr/bin/env bash
# Install Meltano into its own virtualenv (default .venv-meltano) and, unless
# --no-plugins is given, install the project's plugins (`meltano install`).
#
#   scripts/install_meltano.sh [--no-plugins]
#
# Environment: PYTHON (default python3), MELTANO_VENV (default .venv-meltano).
# Needs only Python 3 and PyPI: every plugin is defined in meltano.yml.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
MELTANO_VENV="${MELTANO_VENV:-.venv-meltano}"
export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false

if [ ! -x "$MELTANO_VENV/bin/meltano" ]; then
    echo "==> creating $MELTANO_VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$MELTANO_VENV"
    # uv (which Meltano itself uses to install plugins) installs Meltano in a few
    # seconds where pip takes half a minute.
    "$MELTANO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check uv
    "$MELTANO_VENV/bin/uv" pip install --quiet --python "$MELTANO_VENV/bin/python" \
        -r scripts/meltano-requirements.txt
fi
"$MELTANO_VENV/bin/meltano" --version

if [ "${1:-}" != "--no-plugins" ]; then
    echo "==> meltano install"
    "$MELTANO_VENV/bin/meltano" install
fi
