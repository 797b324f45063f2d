"""`meltano run tap-analytics target-postgres` against the sandbox, into a real PostgreSQL.

One test walks through four runs against the same database and Meltano state:

1. an initial sync: one row per sandbox record in every table, with the right
   column types;
2. after `sb.mutate(...)`: updated records are changed in place (no duplicate ids),
   and new records are added;
3. with the sandbox changing its data *during* the sync;
4. a final, quiet run: every table then equals the sandbox, apart from the records
   the sandbox deleted (an incremental sync cannot see deletions, so they stay).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from tap_analytics import timestamps
from tap_analytics.tap import STREAM_NAMES as STREAMS

pytestmark = pytest.mark.meltano

psycopg = pytest.importorskip("psycopg")
from psycopg.rows import dict_row  # noqa: E402

SCHEMA = "tap_analytics"
RECORDS_PER_RESOURCE = 200

#: MeltanoLabs target-postgres 0.8.1 maps JSON schema `date-time` to `timestamp without
#: time zone`; meltano.yml sets PGTZ=UTC for it, so the stored values are UTC instants. The
#: README says so: if the loader ever creates `timestamp with time zone`, change both.
TIMESTAMP_TYPES = {"timestamp without time zone"}

#: Columns whose types the tests pin down: counters, breakdowns, ids.
EXPECTED_TYPES = {
    ("users", "id"): {"text", "character varying"},
    ("users", "followers_count"): {"bigint"},
    ("users", "media_count"): {"bigint"},
    ("media", "user_id"): {"text", "character varying"},
    ("media", "comments_count"): {"bigint"},
    ("media_insights", "impressions"): {"bigint"},
    ("story_insights", "impressions"): {"bigint"},
    ("user_insights", "impressions"): {"bigint"},
    ("user_lifetime_insights", "audience_city"): {"jsonb"},
    ("user_lifetime_insights", "audience_country"): {"jsonb"},
    ("user_lifetime_insights", "audience_gender_age"): {"jsonb"},
    ("user_lifetime_insights", "online_followers"): {"jsonb"},
    **{(stream, "updated_at"): TIMESTAMP_TYPES for stream in STREAMS},
}


def normalise(db_value: Any, raw_value: Any) -> tuple[Any, Any]:
    """Bring a database value and the sandbox's raw value to comparable forms."""
    if isinstance(db_value, datetime) and isinstance(raw_value, str):
        if db_value.tzinfo is None:  # timestamp without time zone holds UTC (PGTZ=UTC)
            db_value = db_value.replace(tzinfo=timezone.utc)
        return db_value, timestamps.parse(raw_value)
    if isinstance(db_value, date) and isinstance(raw_value, str):
        return db_value.isoformat(), raw_value
    return db_value, raw_value


def fetch_tables(
    pg_database: Any, schema: str = SCHEMA
) -> tuple[dict[str, list[dict[str, Any]]], dict]:
    """Every table's (or view's) rows, and the column types (table, column) -> data_type."""
    with pg_database.connect(row_factory=dict_row) as conn:
        types = {
            (row["table_name"], row["column_name"]): row["data_type"]
            for row in conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s",
                [schema],
            )
        }
        tables = {}
        for stream in STREAMS:
            query = f'SELECT * FROM {schema}."{stream}"'  # noqa: S608 (fixed names)
            tables[stream] = conn.execute(query).fetchall()
    return tables, types


def assert_matches_sandbox(
    pg_database: Any, snapshot: dict[str, list[dict[str, Any]]], deleted: dict[str, set[str]]
) -> dict[str, list[dict[str, Any]]]:
    """Every table holds exactly the sandbox's records (plus the deleted ones), field by field."""
    tables, _ = fetch_tables(pg_database)
    problems: list[str] = []
    for stream in STREAMS:
        rows = tables[stream]
        ids = [row["id"] for row in rows]
        if len(ids) != len(set(ids)):
            problems.append(f"{stream}: {len(ids) - len(set(ids))} duplicate ids")
        by_id = {row["id"]: row for row in rows}
        raw_by_id = {record["id"]: record for record in snapshot[stream]}
        missing = raw_by_id.keys() - by_id.keys()
        extra = by_id.keys() - raw_by_id.keys() - deleted.get(stream, set())
        if missing:
            problems.append(
                f"{stream}: {len(missing)} sandbox records missing, e.g. {min(missing)}"
            )
        if extra:
            problems.append(f"{stream}: {len(extra)} rows not in the sandbox, e.g. {min(extra)}")
        columns = [c for c in (rows[0] if rows else {}) if not c.startswith("_sdc_")]
        for record_id, raw in raw_by_id.items():
            row = by_id.get(record_id)
            if row is None:
                continue
            for column in columns:
                got, want = normalise(row[column], raw.get(column))
                if got != want:
                    problems.append(f"{stream}[{record_id}].{column}: table {got!r}, API {want!r}")
                    break
    assert not problems, "\n".join(problems[:40])
    return tables


def deleted_between(
    before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]
) -> dict[str, set[str]]:
    """Ids present in `before` and gone from `after`, per stream."""
    return {
        stream: {r["id"] for r in before[stream]} - {r["id"] for r in after[stream]}
        for stream in before
    }


def test_runs_merge_into_postgres(
    run_into_postgres: Any, pg_database: Any, start_sandbox: Any
) -> None:
    sb = start_sandbox(records_per_resource=RECORDS_PER_RESOURCE)

    def run() -> None:
        run_into_postgres(sb)

    # 1. Initial sync: one row per record, right types.
    run()
    first = sb.snapshot()
    assert sorted(first) == sorted(STREAMS)
    tables = assert_matches_sandbox(pg_database, first, deleted={})
    for stream in STREAMS:
        assert len(tables[stream]) == len(first[stream]) == RECORDS_PER_RESOURCE, stream
    _, types = fetch_tables(pg_database)
    wrong = {
        key: types.get(key)
        for key, allowed in EXPECTED_TYPES.items()
        if types.get(key) not in allowed
    }
    assert not wrong, f"unexpected column types: {wrong}"
    counters = [
        row[column]
        for row in tables["media_insights"]
        for column in ("impressions", "reach")
        if row[column] is not None
    ]
    assert counters, "no counters loaded"

    # 2. Changes between runs: updates in place, inserts added, deletions kept.
    sb.mutate(updates=5, inserts=3, deletes=2)
    second = sb.snapshot()
    updated = {
        stream: {
            r["id"]
            for r in second[stream]
            if r["updated_at"] != before.get(r["id"], r)["updated_at"]
        }
        for stream in STREAMS
        for before in [{r["id"]: r for r in first[stream]}]
    }
    assert any(updated.values()), "sb.mutate() updated nothing: the test would prove nothing"
    run()
    deleted = deleted_between(first, second)
    assert_matches_sandbox(pg_database, second, deleted)

    # 3. The sandbox changes its data while the tap pages through it.
    sb.configure(mutate_every=3, mutate_updates=2, mutate_inserts=1, mutate_deletes=0)
    run()
    sb.configure(mutate_every=0)
    third = sb.snapshot()

    # 4. A quiet run catches up with everything that changed during run 3.
    run()
    final = sb.snapshot()
    assert final == third, "the sandbox changed although mutate_every is 0"
    deleted = {
        stream: deleted.get(stream, set()) | ids
        for stream, ids in deleted_between(second, final).items()
    }
    tables = assert_matches_sandbox(pg_database, final, deleted)
    grew = {stream: len(final[stream]) - len(second[stream]) for stream in STREAMS}
    assert any(n > 0 for n in grew.values()), f"no record was inserted during run 3: {grew}"
