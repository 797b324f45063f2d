"""Reconciliation runs end to end: `meltano run` into a real PostgreSQL and into DuckDB.

The warehouse is checked after every run against the sandbox's records at that moment:

* after an incremental run, rows deleted at the API are still there and unflagged (an
  incremental read cannot see a delete), every other row equals the API's record;
* after a reconciliation (`TAP_ANALYTICS_RECONCILE_DELETES=true`), the rows deleted at the API
  are flagged (`_sdc_deleted_at` set), or gone with `hard_delete`, and every live row is
  unflagged and equals the API's current record;
* whatever happens to a run (it fails half-way, it is killed with SIGKILL, the data changes
  while it reads), no row the API still has is flagged;
* the run after a reconciliation is incremental again: it rewrites only the rows that changed,
  and Meltano's bookmarks never move backwards.

`test_reconciliation_into_postgres` walks one warehouse through all of it, PostgreSQL with
meltano.yml's settings, and `warehouse/postgres_live_views.sql`'s views of the live rows.
`test_reconciliation_after_upgrade` runs the core of it for target-duckdb-local and for
target-postgres with `hard_delete`, from a warehouse and a STATE as 0.1.0 left them (no record
metadata, plain SDK bookmarks).
"""

from __future__ import annotations

import dataclasses
import json
import operator
import signal
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from test_meltano_postgres import fetch_tables, normalise

from tap_analytics import timestamps
from tap_analytics.sandbox.harness import run_summary
from tap_analytics.tap import STREAM_NAMES as STREAMS

pytestmark = pytest.mark.meltano

psycopg = pytest.importorskip("psycopg")
duckdb = pytest.importorskip("duckdb")

REPO_ROOT = Path(__file__).resolve().parents[2]
LIVE_VIEWS = REPO_ROOT / "warehouse" / "postgres_live_views.sql"
STATE_0_1_0 = REPO_ROOT / "tests" / "fixtures" / "state-0.1.0.json"
LIVE_SCHEMA = "tap_analytics_live"

#: Small enough for quick runs, with 12 pages a stream so that a run can stop inside one.
RECORDS_PER_RESOURCE = 60
TAP_ENV = {"TAP_ANALYTICS_PAGE_SIZE": "5", "TAP_ANALYTICS_START_DATE": "2000-01-01T00:00:00Z"}
RECONCILE = {"TAP_ANALYTICS_RECONCILE_DELETES": "true"}
#: One request at a time (and the sandbox answering in 30 ms): a run made to stop at the second
#: stream's start still has most of its pages to read, not in the tap's buffers.
SLOW = {"TAP_ANALYTICS_MAX_CONCURRENCY": "1"}
SLOW_LATENCY_MS = 30.0
#: The order the tap writes the streams in (the catalog's: by name).
FIRST, SECOND = sorted(STREAMS)[:2]

Tables = dict[str, list[dict[str, Any]]]
Snapshot = dict[str, list[dict[str, Any]]]
Ids = dict[str, set[str]]


# --------------------------------------------------------------------------- the warehouses


def duckdb_tables(path: Path) -> Tables:
    """Every stream's rows in the DuckDB file, JSON columns parsed, timestamps in UTC."""
    tables: Tables = {}
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        for stream in STREAMS:
            cursor = con.execute(f'SELECT * FROM main."{stream}"')  # noqa: S608 (fixed names)
            names = [column[0] for column in cursor.description]
            json_columns = {column[0] for column in cursor.description if column[1] == "JSON"}
            tables[stream] = [
                {
                    name: json.loads(value) if name in json_columns and value else value
                    for name, value in zip(names, row, strict=True)
                }
                for row in cursor.fetchall()
            ]
    return tables


@dataclasses.dataclass
class Pipeline:
    """`meltano run tap-analytics LOADER` against one sandbox, warehouse and Meltano state."""

    meltano: Any
    env: dict[str, str]
    loader: str
    sandbox: Any
    read_tables: Callable[[], Tables]

    @property
    def state_id(self) -> str:
        return f"dev:tap-analytics-to-{self.loader}"

    def _env(self, env: dict[str, str]) -> dict[str, str]:
        return {**self.env, **TAP_ENV, "TAP_ANALYTICS_API_URL": self.sandbox.url, **env}

    def run(self, *flags: str, **env: str) -> str:
        """A run that must succeed; its output."""
        result = self.meltano.run("run", *flags, "tap-analytics", self.loader, env=self._env(env))
        return result.stdout + result.stderr

    def run_watching(self, on_line: Callable[[str], bool], **env: str) -> Any:
        """A run that `on_line` watches (and may kill); its result, output in `stdout`."""
        return self.meltano.run_watching(
            "run", "tap-analytics", self.loader, on_line=on_line, env=self._env(env)
        )

    def state(self) -> dict[str, Any]:
        result = self.meltano.run("state", "get", self.state_id, env=self.env)
        return dict(json.loads(result.stdout)["singer_state"])

    def set_state(self, singer_state: dict[str, Any]) -> None:
        payload = json.dumps({"singer_state": singer_state})
        self.meltano.run("state", "set", "--force", self.state_id, payload, env=self.env)


def bookmarks(state: dict[str, Any]) -> dict[str, float]:
    """Each stream's bookmark as epoch seconds."""
    return {
        stream: timestamps.epoch(entry["replication_key_value"])
        for stream, entry in state["bookmarks"].items()
    }


def assert_not_moved_back(before: dict[str, Any], after: dict[str, Any]) -> None:
    old, new = bookmarks(before), bookmarks(after)
    assert set(new) == set(STREAMS)
    back = {stream: (old[stream], new[stream]) for stream in old if new[stream] < old[stream]}
    assert not back, f"bookmarks moved backwards (before, after): {back}"


# --------------------------------------------------------------------------- the checks


def live_ids(snapshot: Snapshot) -> Ids:
    return {stream: {record["id"] for record in snapshot[stream]} for stream in STREAMS}


def table_ids(tables: Tables) -> Ids:
    return {stream: {row["id"] for row in tables[stream]} for stream in STREAMS}


def gone_from_api(tables: Tables, snapshot: Snapshot) -> Ids:
    """Ids the warehouse holds that the API no longer has."""
    live = live_ids(snapshot)
    return {stream: ids - live[stream] for stream, ids in table_ids(tables).items()}


def flagged_live_rows(tables: Tables, snapshot: Snapshot) -> list[str]:
    """Rows flagged as deleted although the API still has them (each a problem line)."""
    live = live_ids(snapshot)
    return [
        f"{stream}[{row['id']}] flagged at {row['_sdc_deleted_at']} but live at the API"
        for stream in STREAMS
        for row in tables[stream]
        if row.get("_sdc_deleted_at") is not None and row["id"] in live[stream]
    ]


def assert_no_live_row_flagged(tables: Tables, snapshot: Snapshot) -> None:
    problems = flagged_live_rows(tables, snapshot)
    assert not problems, f"{len(problems)} live rows flagged:\n" + "\n".join(problems[:20])


def assert_warehouse(tables: Tables, snapshot: Snapshot, deleted: Ids, deleted_rows: str) -> None:
    """Every live record loaded, unflagged and equal to the API's; `deleted` ids as said.

    `deleted_rows`: "kept" (present, unflagged: after an incremental run), "flagged" (present,
    `_sdc_deleted_at` set) or "gone" (absent: hard_delete).
    """
    problems = flagged_live_rows(tables, snapshot)
    for stream in STREAMS:
        rows = tables[stream]
        by_id = {row["id"]: row for row in rows}
        if len(by_id) != len(rows):
            problems.append(f"{stream}: {len(rows) - len(by_id)} duplicate ids")
        api = {record["id"]: record for record in snapshot[stream]}
        missing = api.keys() - by_id.keys()
        if missing:
            problems.append(f"{stream}: {len(missing)} live records missing, e.g. {min(missing)}")
        extra = by_id.keys() - api.keys() - deleted[stream]
        if extra:
            problems.append(f"{stream}: {len(extra)} rows the API never had, e.g. {min(extra)}")
        for record_id in sorted(deleted[stream]):
            row = by_id.get(record_id)
            state = (
                "gone" if row is None else "kept" if row["_sdc_deleted_at"] is None else "flagged"
            )
            if state != deleted_rows:
                problems.append(
                    f"{stream}[{record_id}] deleted at the API: {state}, not {deleted_rows}"
                )
        for record_id in api.keys() & by_id.keys():
            row, record = by_id[record_id], api[record_id]
            for column in (c for c in row if not c.startswith("_sdc_")):
                got, want = normalise(row[column], record.get(column))
                if got != want:
                    problems.append(f"{stream}[{record_id}].{column}: {got!r}, API {want!r}")
                    break
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:30])


def mutate(pipeline: Pipeline, tables: Tables, **changes: int) -> Ids:
    """Change the sandbox's data (`Dataset.mutate`); the ids of `tables` it deleted."""
    pipeline.sandbox.mutate(**changes)
    deleted = gone_from_api(tables, pipeline.sandbox.snapshot())
    if changes.get("deletes"):
        assert any(deleted.values()), "the sandbox deleted no loaded record"
    return deleted


def batches(tables: Tables) -> dict[tuple[str, str], Any]:
    return {(s, row["id"]): row["_sdc_batched_at"] for s in STREAMS for row in tables[s]}


def assert_only_changes_rewritten(before: Tables, after: Tables, snapshot: Snapshot) -> None:
    """An incremental run: the rows it wrote are those the API changed since `before`."""
    old = {(s, row["id"]): row["updated_at"] for s in STREAMS for row in before[s]}
    changed = {
        (s, record["id"])
        for s in STREAMS
        for record in snapshot[s]
        if (s, record["id"]) not in old
        or operator.ne(*normalise(old[s, record["id"]], record["updated_at"]))
    }
    assert changed, "nothing changed: the check would prove nothing"
    first, second = batches(before), batches(after)
    rewritten = {key for key, batch in second.items() if first.get(key) != batch}
    assert rewritten == changed, (
        f"rewrote {len(rewritten - changed)} unchanged rows {sorted(rewritten - changed)[:3]}, "
        f"missed {len(changed - rewritten)} changed ones {sorted(changed - rewritten)[:3]}"
    )


def summary_of(output: str) -> dict[str, dict[str, Any]]:
    """The tap's RUN_SUMMARY, by stream."""
    summary = run_summary(output.splitlines())
    assert summary is not None, "the tap logged no RUN_SUMMARY"
    return {stream["stream"]: stream for stream in summary["streams"]}


def middle_of_the_data(snapshot: Snapshot) -> str:
    """A start_date half-way through the records' updated_at."""
    instants = sorted(r["updated_at"] for s in STREAMS for r in snapshot[s])  # one form: sortable
    return str(timestamps.rfc3339(instants[len(instants) // 2]))


# --------------------------------------------------------------------------- PostgreSQL


def assert_views_hold_the_live_rows(pg_database: Any, tables: Tables) -> None:
    """Each view: the table's unflagged rows, without `_sdc_*`, timestamps with time zone."""
    views, types = fetch_tables(pg_database, LIVE_SCHEMA)
    _, table_types = fetch_tables(pg_database)
    for stream in STREAMS:
        want = {
            row["id"]: {
                column: value.replace(tzinfo=timezone.utc)
                if table_types[stream, column] == "timestamp without time zone"
                else value
                for column, value in row.items()
                if not column.startswith("_sdc_")
            }
            for row in tables[stream]
            if row["_sdc_deleted_at"] is None
        }
        assert {row["id"]: row for row in views[stream]} == want, stream
        assert types[stream, "updated_at"] == "timestamp with time zone", stream


def create_live_views(pg_database: Any) -> None:
    with pg_database.connect() as conn:
        conn.execute(LIVE_VIEWS.read_text())


def test_reconciliation_into_postgres(
    meltano_project: Any,
    meltano_env: dict[str, str],
    target_postgres_env: dict[str, str],
    pg_database: Any,
    start_sandbox: Any,
) -> None:
    sb = start_sandbox(records_per_resource=RECORDS_PER_RESOURCE)
    pipeline = Pipeline(
        meltano_project,
        {**meltano_env, **target_postgres_env},
        "target-postgres",
        sb,
        lambda: fetch_tables(pg_database)[0],
    )

    # 1. The first load.
    pipeline.run()
    loaded = pipeline.read_tables()
    assert_warehouse(
        loaded, sb.snapshot(), deleted={stream: set() for stream in STREAMS}, deleted_rows="kept"
    )

    # 2. Updates, inserts and deletes at the API; an incremental run cannot see the deletes.
    deleted = mutate(pipeline, loaded, updates=8, inserts=4, deletes=6)
    pipeline.run()
    assert_warehouse(pipeline.read_tables(), sb.snapshot(), deleted, deleted_rows="kept")
    nightly_state = pipeline.state()

    # 3. A reconciliation: the deleted rows flagged, every live row unflagged and current.
    output = pipeline.run(**RECONCILE)
    reconciled = pipeline.read_tables()
    assert_warehouse(reconciled, sb.snapshot(), deleted, deleted_rows="flagged")
    summary = summary_of(output)
    assert all(summary[s]["version_activated"] for s in STREAMS), summary
    reconciled_state = pipeline.state()
    assert_not_moved_back(nightly_state, reconciled_state)
    create_live_views(pg_database)
    assert_views_hold_the_live_rows(pg_database, reconciled)

    # 4. The next run is incremental again: it rewrites only what changed, flags nothing.
    sb.mutate(updates=5)
    pipeline.run()
    after = pipeline.read_tables()
    assert_warehouse(after, sb.snapshot(), deleted, deleted_rows="flagged")
    assert_only_changes_rewritten(reconciled, after, sb.snapshot())
    nightly_state = pipeline.state()
    assert_not_moved_back(reconciled_state, nightly_state)

    # 5. A reconciliation whose API fails for good half-way (500s from the second stream on).
    more = mutate(pipeline, after, updates=4, inserts=3, deletes=6)
    deleted = {stream: ids | more[stream] for stream, ids in deleted.items()}
    sb.configure(latency_ms=SLOW_LATENCY_MS)

    def the_api_fails_from_the_second_stream(line: str) -> bool:
        if f"Beginning sync of '{SECOND}'" in line:
            sb.configure(fault_rate=1.0, faults=["500"])
        return False

    failed = pipeline.run_watching(
        the_api_fails_from_the_second_stream, TAP_ANALYTICS_MAX_RETRIES="1", **SLOW, **RECONCILE
    )
    sb.configure(fault_rate=0.0)
    assert failed.returncode != 0, failed.stdout[-3000:]
    summary = summary_of(failed.stdout)
    # Half-way: the first stream read whole and activated, a later one failed.
    assert summary[FIRST]["version_activated"], summary
    assert "failed" in {summary[s]["status"] for s in STREAMS}, summary
    assert_no_live_row_flagged(pipeline.read_tables(), sb.snapshot())
    # The streams it did not finish keep their bookmarks; the others only move forward.
    failed_state = pipeline.state()
    assert_not_moved_back(nightly_state, failed_state)
    unfinished = [s for s in STREAMS if summary[s]["status"] != "ok"]
    for stream in unfinished:
        assert failed_state["bookmarks"][stream] == nightly_state["bookmarks"][stream], stream

    # 6. A reconciliation killed with SIGKILL (meltano, tap and target) once the target has
    # written rows of the second stream's new version.
    def killed_mid_stream(line: str) -> bool:
        return f"Target sink for '{SECOND}' is full" in line

    killed = pipeline.run_watching(
        killed_mid_stream, TARGET_POSTGRES_BATCH_SIZE_ROWS="5", **SLOW, **RECONCILE
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    assert_no_live_row_flagged(pipeline.read_tables(), sb.snapshot())
    sb.configure(latency_ms=0.0)

    # 7. The next reconciliation, with start_date moved forward since the first load, gets
    # everything right: rows before the new start_date are read, not flagged. (--force: the
    # killed run's job still looks like it is running.)
    start_date = middle_of_the_data(sb.snapshot())
    pipeline.run("--force", TAP_ANALYTICS_START_DATE=start_date, **RECONCILE)
    reconciled = pipeline.read_tables()
    assert_warehouse(reconciled, sb.snapshot(), deleted, deleted_rows="flagged")

    # 8. A reconciliation while the data changes under it flags no live row.
    before = sb.snapshot()
    sb.configure(mutate_every=2, mutate_updates=2, mutate_inserts=1, mutate_deletes=1)
    output = pipeline.run("--force", TAP_ANALYTICS_START_DATE=start_date, **RECONCILE)
    sb.configure(mutate_every=0)
    assert sb.snapshot() != before, "the data did not change during the reconciliation"
    summary = summary_of(output)
    assert all(summary[s]["version_activated"] for s in STREAMS), summary
    tables = pipeline.read_tables()
    assert_no_live_row_flagged(tables, sb.snapshot())
    assert_views_hold_the_live_rows(pg_database, tables)


# --------------------------------------------------------------------------- after an upgrade


@dataclasses.dataclass(frozen=True)
class Loader:
    name: str
    env_prefix: str
    hard_delete: bool

    @property
    def deleted_rows(self) -> str:
        return "gone" if self.hard_delete else "flagged"


LOADERS = [
    Loader("target-duckdb-local", "TARGET_DUCKDB_LOCAL_", hard_delete=False),
    Loader("target-postgres", "TARGET_POSTGRES_", hard_delete=True),
]


@pytest.mark.parametrize("loader", LOADERS, ids=lambda loader: loader.name)
def test_reconciliation_after_upgrade(
    loader: Loader,
    request: pytest.FixtureRequest,
    meltano_project: Any,
    meltano_env: dict[str, str],
    start_sandbox: Any,
) -> None:
    """A warehouse and STATE from 0.1.0: reconciled right, then incremental again."""
    sb = start_sandbox(records_per_resource=RECORDS_PER_RESOURCE)
    if loader.name == "target-postgres":
        database = request.getfixturevalue("pg_database")
        env = {**meltano_env, **request.getfixturevalue("target_postgres_env")}
        read_tables = lambda: fetch_tables(database)[0]  # noqa: E731
    else:
        env, warehouse = meltano_env, Path(meltano_env["TARGET_DUCKDB_LOCAL_PATH"])
        read_tables = lambda: duckdb_tables(warehouse)  # noqa: E731
    env = {**env, f"{loader.env_prefix}HARD_DELETE": str(loader.hard_delete).lower()}
    pipeline = Pipeline(meltano_project, env, loader.name, sb, read_tables)

    # 0.1.0's load: no record metadata; its STATE: plain SDK bookmarks.
    no_metadata = {f"{loader.env_prefix}ADD_RECORD_METADATA": "false"}
    if loader.name == "target-postgres":  # it refuses activate_version without the metadata
        no_metadata["TARGET_POSTGRES_ACTIVATE_VERSION"] = "false"
    pipeline.run(**no_metadata)
    old_state = json.loads(STATE_0_1_0.read_text())
    for stream, entry in pipeline.state()["bookmarks"].items():
        old_state["bookmarks"][stream]["replication_key_value"] = entry["replication_key_value"]
    pipeline.set_state(old_state)
    loaded = pipeline.read_tables()
    assert "_sdc_deleted_at" not in loaded["media"][0]

    # A reconciliation, with start_date moved forward: the old STATE does not say where the
    # first run started, so it reads everything, and flags (deletes) exactly the deleted rows.
    deleted = mutate(pipeline, loaded, updates=6, inserts=3, deletes=6)
    output = pipeline.run(TAP_ANALYTICS_START_DATE=middle_of_the_data(sb.snapshot()), **RECONCILE)
    reconciled = pipeline.read_tables()
    assert_warehouse(reconciled, sb.snapshot(), deleted, deleted_rows=loader.deleted_rows)
    summary = summary_of(output)
    assert all(summary[s]["version_activated"] for s in STREAMS), summary
    reconciled_state = pipeline.state()
    assert_not_moved_back(old_state, reconciled_state)

    # The next run is incremental.
    sb.mutate(updates=5)
    pipeline.run()
    after = pipeline.read_tables()
    assert_warehouse(after, sb.snapshot(), deleted, deleted_rows=loader.deleted_rows)
    assert_only_changes_rewritten(reconciled, after, sb.snapshot())
    assert_not_moved_back(reconciled_state, pipeline.state())
