"""ACTIVATE_VERSION through MeltanoLabs target-postgres (installed by meltano.yml) into PostgreSQL.

The same Singer messages and checks as target-duckdb-local's tests
(test_target_duckdb_local.py), so both loaders are held to one behaviour: rows of older
or missing versions flagged in `_sdc_deleted_at` (deleted with `hard_delete`), rows of
the activated version never, rows sent again unflagged, a table from before record
metadata gaining the columns, and a version cut off before its ACTIVATE_VERSION
flagging nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_target_duckdb_local import (
    TargetUnderTest,
    check_crash_after_activation,
    check_empty_version,
    check_reconciliations,
)

pytestmark = pytest.mark.meltano

psycopg = pytest.importorskip("psycopg")

SCHEMA = "tap_analytics"


class PostgresTarget(TargetUnderTest):
    """target-postgres loading one PostgreSQL database."""

    def __init__(self, executable: Path, database: Any, workdir: Path) -> None:
        self.executable = executable
        self.database = database
        self.workdir = workdir

    def settings(self, *, metadata: bool, hard_delete: bool) -> dict[str, Any]:
        # As in meltano.yml; 0.8.1 refuses activate_version without record metadata.
        return {
            "add_record_metadata": metadata,
            "activate_version": metadata,
            "hard_delete": hard_delete,
        }

    def run(self, lines: list[dict[str, Any]], **config: Any) -> subprocess.CompletedProcess[str]:
        db = self.database
        connection = {
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "password": db.password,
            "database": db.dbname,
            "default_target_schema": SCHEMA,
        }
        config_file = self.workdir / "target-postgres.json"
        config_file.write_text(json.dumps({**connection, **config}))
        return subprocess.run(
            [str(self.executable), "--config", str(config_file)],
            input="".join(json.dumps(line) + "\n" for line in lines),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "PGTZ": "UTC"},  # as meltano.yml runs it
        )

    def rows(self) -> dict[str, tuple[Any, Any]]:
        with self.database.connect() as conn:
            query = f"SELECT id, _sdc_table_version, _sdc_deleted_at FROM {SCHEMA}.users"  # noqa: S608
            return {row[0]: (row[1], row[2]) for row in conn.execute(query).fetchall()}

    def columns(self) -> set[str]:
        with self.database.connect() as conn:
            rows = conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'users'",
                [SCHEMA],
            ).fetchall()
        return {row[0] for row in rows}


@pytest.fixture
def target_postgres(meltano: Any, pg_database: Any, tmp_path: Path) -> PostgresTarget:
    """target-postgres from the project's `meltano install`, loading this test's database."""
    executable = meltano.project / ".meltano/loaders/target-postgres/venv/bin/target-postgres"
    assert executable.is_file(), f"{executable} missing after meltano install"
    return PostgresTarget(executable, pg_database, tmp_path)


def test_reconciliations_flag_exactly_the_rows_of_older_versions(
    target_postgres: PostgresTarget,
) -> None:
    check_reconciliations(target_postgres)


def test_activate_version_writes_the_pending_rows_first(target_postgres: PostgresTarget) -> None:
    check_crash_after_activation(target_postgres)


def test_a_version_without_records(target_postgres: PostgresTarget) -> None:
    check_empty_version(target_postgres)


def test_activate_version_needs_record_metadata(target_postgres: PostgresTarget) -> None:
    """What 0.8.1 does with activate_version on and add_record_metadata off: refuses to start."""
    result = target_postgres.run([], add_record_metadata=False, activate_version=True)
    assert result.returncode != 0
    assert "unless add_record_metadata is set to true" in result.stderr
