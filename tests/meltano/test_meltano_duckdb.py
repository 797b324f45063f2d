"""`meltano run tap-analytics target-duckdb-local`: the default, server-less pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tap_analytics.tap import STREAM_NAMES as STREAMS

pytestmark = pytest.mark.meltano

duckdb = pytest.importorskip("duckdb")


def ids_per_table(path: Path) -> dict[str, list[str]]:
    """Every table's ids (one entry per row, so duplicates show)."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [row[0] for row in con.execute("SHOW TABLES").fetchall()]
        return {
            table: [row[0] for row in con.execute(f'SELECT id FROM "{table}"').fetchall()]  # noqa: S608
            for table in tables
        }


def test_rows_per_table_equal_the_sandbox(
    meltano_project: Any, meltano_env: dict[str, str], start_sandbox: Any
) -> None:
    sb = start_sandbox(records_per_resource=150)
    env = {**meltano_env, "TAP_ANALYTICS_API_URL": sb.url}
    warehouse = Path(env["TARGET_DUCKDB_LOCAL_PATH"])

    meltano_project.run("run", "tap-analytics", "target-duckdb-local", env=env)
    snapshot = sb.snapshot()
    loaded = ids_per_table(warehouse)
    assert sorted(loaded) == sorted(STREAMS)
    for stream in STREAMS:
        assert len(loaded[stream]) == len(snapshot[stream]) == 150, stream
        assert set(loaded[stream]) == {r["id"] for r in snapshot[stream]}, stream

    # A second run after changes merges on the key: no duplicates, new records added.
    sb.mutate(updates=4, inserts=2, deletes=0)
    meltano_project.run("run", "tap-analytics", "target-duckdb-local", env=env)
    snapshot = sb.snapshot()
    loaded = ids_per_table(warehouse)
    for stream in STREAMS:
        assert sorted(loaded[stream]) == sorted(r["id"] for r in snapshot[stream]), stream
    with duckdb.connect(str(warehouse), read_only=True) as con:
        newest = con.execute("SELECT epoch_us(max(updated_at)) FROM users").fetchall()[0][0]
    assert newest is not None
