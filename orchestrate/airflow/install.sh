#!/usr/bin/env bash
# Install Apache Airflow into its own virtualenv (default .venv-airflow), never the tap's or
# Meltano's, from the pins in orchestrate/airflow/requirements.lock.
#
#   orchestrate/airflow/install.sh
#
# Environment: AIRFLOW_PYTHON (default $PYTHON, else python3; 3.10 to 3.14),
# AIRFLOW_VENV (default .venv-airflow).
#
# The lock pins every package (Airflow's published constraints file cannot be fetched here),
# so it is installed with --no-deps. A virtualenv already built from the same lock with the
# same Python is left alone: the script then costs a second, and CI can cache the directory.
set -euo pipefail

cd "$(dirname "$0")/../.."
PYTHON="${AIRFLOW_PYTHON:-${PYTHON:-python3}}"
AIRFLOW_VENV="${AIRFLOW_VENV:-.venv-airflow}"
LOCK=orchestrate/airflow/requirements.lock
# The installer, pinned so that a cached and a fresh virtualenv are built the same way.
UV_VERSION=0.13.9

version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$version" in
    # Airflow 3.3.2 supports 3.10 to 3.14; the lock has wheels for each of them.
    3.10 | 3.11 | 3.12 | 3.13 | 3.14) ;;
    *)
        echo "Airflow 3.3 needs Python 3.10 to 3.14; $PYTHON is $version." >&2
        echo "Set AIRFLOW_PYTHON to a supported interpreter." >&2
        exit 1
        ;;
esac

# What the virtualenv was built from: the lock's content and the Python version.
if command -v sha256sum > /dev/null; then
    lock_hash="$(sha256sum "$LOCK" | cut -d' ' -f1)"
else # macOS
    lock_hash="$(shasum -a 256 "$LOCK" | cut -d' ' -f1)"
fi
wanted="$lock_hash python$version"
stamp="$AIRFLOW_VENV/.built-from"
if [ -x "$AIRFLOW_VENV/bin/airflow" ] && [ "$(cat "$stamp" 2> /dev/null)" = "$wanted" ]; then
    echo "==> $AIRFLOW_VENV is up to date with $LOCK (python$version)"
    exit 0
fi

echo "==> creating $AIRFLOW_VENV with $("$PYTHON" --version 2>&1) from $LOCK"
rm -rf "$AIRFLOW_VENV"
"$PYTHON" -m venv "$AIRFLOW_VENV"
# uv installs Airflow's ~150 packages in seconds where pip takes minutes.
"$AIRFLOW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
"$AIRFLOW_VENV/bin/uv" pip install --quiet --python "$AIRFLOW_VENV/bin/python" --no-deps -r "$LOCK"
# --no-deps trusts the lock: check that it really holds everything this Python needs.
"$AIRFLOW_VENV/bin/uv" pip check --quiet --python "$AIRFLOW_VENV/bin/python"
# Written last: an interrupted install is rebuilt on the next call.
echo "$wanted" > "$stamp"
# (Not `airflow version`, which would create ~/airflow.)
"$AIRFLOW_VENV/bin/python" -c 'import importlib.metadata as m; print("apache-airflow", m.version("apache-airflow"))'
