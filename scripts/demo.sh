#!/usr/bin/env bash
# First run of tap-analytics, end to end, with nothing but Python 3 and PyPI:
#
#   1. installs Meltano in .venv-meltano and the project's plugins (meltano install);
#   2. starts the sandbox API server (python -m tap_analytics.sandbox) on a free port;
#   3. runs `meltano run tap-analytics target-duckdb-local` against it;
#   4. prints the rows per table next to the sandbox's record counts, and exits 1
#      if any table differs;
#   5. stops the sandbox.
#
#   scripts/demo.sh                       # 200 records per resource
#   RECORDS=5000 scripts/demo.sh
#
# The demo keeps its own Meltano state and DuckDB file under output/demo/ (wiped at
# each start), so it never touches the project's own state or warehouse.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
RECORDS="${RECORDS:-200}"
MELTANO_VENV="${MELTANO_VENV:-.venv-meltano}"
DEMO_DIR="$ROOT/output/demo"

scripts/install_meltano.sh

TAP_PYTHON=".meltano/extractors/tap-analytics/venv/bin/python"
DUCKDB_PYTHON=".meltano/loaders/target-duckdb-local/venv/bin/python"

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"

echo "==> starting the sandbox ($RECORDS records per resource)"
"$TAP_PYTHON" -m tap_analytics.sandbox --port 0 --records-per-resource "$RECORDS" \
    > "$DEMO_DIR/sandbox.out" 2> "$DEMO_DIR/sandbox.log" &
SANDBOX_PID=$!
stop_sandbox() {
    kill "$SANDBOX_PID" 2> /dev/null || true
    wait "$SANDBOX_PID" 2> /dev/null || true
}
trap stop_sandbox EXIT

URL=""
for _ in $(seq 1 300); do
    URL="$(head -n 1 "$DEMO_DIR/sandbox.out" 2> /dev/null || true)"
    [ -n "$URL" ] && break
    if ! kill -0 "$SANDBOX_PID" 2> /dev/null; then
        echo "the sandbox exited:" >&2
        cat "$DEMO_DIR/sandbox.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$URL" ]; then
    echo "the sandbox printed no URL within 30 s" >&2
    exit 1
fi
echo "    $URL"

export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
export MELTANO_ENVIRONMENT=dev
export MELTANO_DATABASE_URI="sqlite:///$DEMO_DIR/meltano.db"
export TAP_ANALYTICS_API_URL="$URL"
export TAP_ANALYTICS_API_KEY=sandbox-key
export TARGET_DUCKDB_LOCAL_PATH="$DEMO_DIR/tap_analytics.duckdb"

echo "==> meltano run tap-analytics target-duckdb-local"
started=$(date +%s)
"$MELTANO_VENV/bin/meltano" run tap-analytics target-duckdb-local > "$DEMO_DIR/meltano-run.log" 2>&1 || {
    tail -n 40 "$DEMO_DIR/meltano-run.log" >&2
    exit 1
}
echo "    done in $(($(date +%s) - started)) s (log: output/demo/meltano-run.log)"

echo "==> rows per table"
"$DUCKDB_PYTHON" - "$URL" "$TARGET_DUCKDB_LOCAL_PATH" << 'PYTHON'
import json
import sys
import urllib.request

import duckdb

url, path = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(f"{url}/_sandbox/snapshot", timeout=60) as response:
    snapshot = json.load(response)
with duckdb.connect(path, read_only=True) as con:
    tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
    print(f"    {'table':<24} {'rows':>8} {'sandbox':>8}")
    failed = False
    for resource, records in snapshot.items():
        rows = None
        if resource in tables:
            rows = con.execute(f'SELECT count(DISTINCT id), count(*) FROM "{resource}"').fetchall()[0]
        ok = rows is not None and rows[0] == rows[1] == len(records)
        failed |= not ok
        shown = "missing" if rows is None else rows[1]
        print(f"    {resource:<24} {shown:>8} {len(records):>8}  {'ok' if ok else 'DIFFERENT'}")
if failed:
    sys.exit("some tables differ from the sandbox")
print(f"\nAll tables match. Query them with DuckDB, e.g.:\n"
      f"    {sys.executable} -c \"import duckdb; print(duckdb.connect('{path}').sql('from users limit 5'))\"")
PYTHON
