"""The embedded DuckDB loader (plugins/loaders/target-duckdb-local) loses nothing.

These tests feed hand-written Singer messages to the target in-process. They use
the cases that PyPI's target-duckdb 0.8.0 silently drops or alters: a one-record
batch whose date-time values carry an offset (`+00:00`, `Z`), 20-digit string ids,
integers above 2**31 and 2**53, nested objects of big integers, and empty or
all-text strings.

The ACTIVATE_VERSION tests run the target as its own process, as Meltano does. Their
message sequences (`check_reconciliations`, `check_crash_after_activation`) are also
run through target-postgres into PostgreSQL by test_activate_version.py: both targets
must end in the same rows.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

duckdb = pytest.importorskip("duckdb")

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugins" / "loaders" / "target-duckdb-local"
sys.path.insert(0, str(PLUGIN_DIR))

from target_duckdb_local.target import TargetDuckDBLocal, column_type  # noqa: E402

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
        "day": {"type": ["string", "null"], "format": "date"},
        "name": {"type": ["string", "null"]},
        "count": {"type": ["integer", "null"]},
        "rate": {"type": ["number", "null"]},
        "ok": {"type": ["boolean", "null"]},
        "breakdown": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    },
}
NAMES = ["", "a,b", 'q"uote', "line\nbreak", None, "ü ñ 😀", "plain text only"]


def make_record(i: int, *, version: int = 0) -> dict[str, Any]:
    """Record number `i`: a 20-digit id, an offset timestamp, big integers, nested values."""
    offset = "Z" if i % 2 else "+00:00"
    return {
        "id": str(17841400000000000000 + i),
        "updated_at": f"2024-01-01T12:34:{i % 60:02d}.{i:06d}{offset}",
        "day": "2024-02-29",
        "name": NAMES[i % len(NAMES)],
        "count": 2**40 + i + version,
        "rate": i / 8,
        "ok": i % 3 == 0,
        "breakdown": {"a": 2**62 + i, "b": version},
        "tags": ["x", str(i)],
    }


def messages(records: list[dict[str, Any]], stream: str = "users") -> str:
    """Singer messages: one SCHEMA, the RECORDs, one STATE."""
    lines = [{"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": ["id"]}]
    lines += [{"type": "RECORD", "stream": stream, "record": r} for r in records]
    lines.append({"type": "STATE", "value": {"bookmarks": {stream: {"n": len(records)}}}})
    return "".join(json.dumps(line) + "\n" for line in lines)


def load(path: Path, records: list[dict[str, Any]], **config: Any) -> None:
    """Run the target in-process on the given records."""
    target = TargetDuckDBLocal(config={"path": str(path), **config}, validate_config=True)
    target.listen(io.StringIO(messages(records)))


def table(path: Path, name: str = "users") -> dict[str, dict[str, Any]]:
    """The table's rows by id, with timestamps as epoch microseconds and JSON parsed."""
    with duckdb.connect(str(path), read_only=True) as con:
        columns = "id, epoch_us(updated_at), CAST(day AS VARCHAR), name, count, rate, ok"
        json_columns = "CAST(breakdown AS VARCHAR), CAST(tags AS VARCHAR)"
        query = f"SELECT {columns}, {json_columns} FROM main.{name}"  # noqa: S608
        rows = con.execute(query).fetchall()
    keys = ["id", "updated_us", "day", "name", "count", "rate", "ok", "breakdown", "tags"]
    result = {}
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["breakdown"] = json.loads(item["breakdown"])
        item["tags"] = json.loads(item["tags"])
        result[item["id"]] = item
    return result


def expected(record: dict[str, Any]) -> dict[str, Any]:
    """What a record must look like once loaded."""
    instant = datetime.fromisoformat(record["updated_at"].replace("Z", "+00:00"))
    return {
        **{k: v for k, v in record.items() if k != "updated_at"},
        "updated_us": int((instant - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
        * 1_000_000
        + instant.microsecond,
    }


def test_one_record_with_offset_timestamp_is_loaded(tmp_path: Path) -> None:
    """The case target-duckdb 0.8.0 loads as an empty table."""
    db = tmp_path / "one.duckdb"
    record = make_record(1)  # ends in Z
    load(db, [record])
    assert table(db) == {record["id"]: expected(record)}


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_every_record_arrives_intact(tmp_path: Path, batch_size: int) -> None:
    """Any batching loses nothing: strings, big integers, nested objects, timestamps."""
    db = tmp_path / "many.duckdb"
    records = [make_record(i) for i in range(50)]
    load(db, records, batch_size_rows=batch_size)
    assert table(db) == {r["id"]: expected(r) for r in records}


def test_rerun_merges_on_the_key(tmp_path: Path) -> None:
    """A second load updates rows in place and adds new ones: no duplicate ids."""
    db = tmp_path / "merge.duckdb"
    first = [make_record(i) for i in range(20)]
    load(db, first)
    second = [make_record(i, version=1) for i in range(10, 30)]
    load(db, second, batch_size_rows=6)
    want = {r["id"]: expected(r) for r in first}
    want.update({r["id"]: expected(r) for r in second})
    assert table(db) == want
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT id) FROM users").fetchall() == [
            (30, 30)
        ]


def test_duplicates_within_a_batch_keep_the_last_version(tmp_path: Path) -> None:
    db = tmp_path / "dupes.duckdb"
    records = [make_record(1), make_record(2), make_record(1, version=5)]
    load(db, records)
    assert table(db) == {
        records[1]["id"]: expected(records[1]),
        records[2]["id"]: expected(records[2]),
    }


def test_append_only_keeps_every_version(tmp_path: Path) -> None:
    db = tmp_path / "append.duckdb"
    load(db, [make_record(1)], load_method="append-only")
    load(db, [make_record(1, version=1)], load_method="append-only")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM users").fetchall() == [(2,)]


def test_new_columns_are_added(tmp_path: Path) -> None:
    db = tmp_path / "evolve.duckdb"
    load(db, [make_record(1)])
    schema = json.loads(json.dumps(SCHEMA))
    schema["properties"]["extra"] = {"type": ["integer", "null"]}
    lines = [
        {"type": "SCHEMA", "stream": "users", "schema": schema, "key_properties": ["id"]},
        {"type": "RECORD", "stream": "users", "record": {**make_record(2), "extra": 2**50}},
    ]
    target = TargetDuckDBLocal(config={"path": str(db)})
    target.listen(io.StringIO("".join(json.dumps(m) + "\n" for m in lines)))
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT id, extra FROM users ORDER BY id").fetchall()
    assert rows == [(make_record(1)["id"], None), (make_record(2)["id"], 2**50)]


def test_state_is_emitted_after_the_rows_are_committed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "state.duckdb"
    load(db, [make_record(i) for i in range(3)])
    states = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert states[-1] == {"bookmarks": {"users": {"n": 3}}}


@pytest.mark.parametrize(
    ("schema", "sql_type"),
    [
        ({"type": "string"}, "VARCHAR"),
        ({"type": ["string", "null"], "format": "date-time"}, "TIMESTAMPTZ"),
        ({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}, "TIMESTAMPTZ"),
        ({"type": ["string", "null"], "format": "date"}, "DATE"),
        ({"type": ["string", "null"], "format": "time"}, "VARCHAR"),
        ({"type": ["integer", "null"]}, "BIGINT"),
        ({"type": "number"}, "DOUBLE"),
        ({"type": "boolean"}, "BOOLEAN"),
        ({"type": ["object", "null"]}, "JSON"),
        ({"type": "array", "items": {"type": "string"}}, "JSON"),
        ({"type": ["string", "integer"]}, "JSON"),
        ({}, "JSON"),
    ],
)
def test_column_types(schema: dict[str, Any], sql_type: str) -> None:
    assert column_type(schema) == sql_type


# --------------------------------------------------------------------------- ACTIVATE_VERSION


class TargetUnderTest:
    """A target the check functions load through: `run` starts it, `rows`/`columns` read it."""

    def settings(self, *, metadata: bool, hard_delete: bool) -> dict[str, Any]:
        """The target's config for record metadata on or off, and hard delete."""
        return {"add_record_metadata": metadata, "hard_delete": hard_delete}

    def run(self, lines: list[dict[str, Any]], **config: Any) -> subprocess.CompletedProcess[str]:
        """Run the target as its own process on these messages."""
        raise NotImplementedError

    def rows(self) -> dict[str, tuple[Any, Any]]:
        """{id: (_sdc_table_version, _sdc_deleted_at)} of the `users` table."""
        raise NotImplementedError

    def columns(self) -> set[str]:
        """The `users` table's column names."""
        raise NotImplementedError

    def load(
        self,
        lines: list[dict[str, Any]],
        *,
        metadata: bool = True,
        hard_delete: bool = False,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run the target; unless `check` is false, it must succeed."""
        result = self.run(lines, **self.settings(metadata=metadata, hard_delete=hard_delete))
        if check:
            assert result.returncode == 0, result.stderr[-3000:]
        return result


def rid(i: int) -> str:
    """The id of record number `i`."""
    return str(make_record(i)["id"])


def version_messages(
    numbers: Iterable[int], version: int | None, *, activate: bool = True, stream: str = "users"
) -> list[dict[str, Any]]:
    """One stream's SCHEMA, its RECORDs of `version`, then (if `activate`) its ACTIVATE_VERSION.

    Without `activate` the stream is cut off after its last record, as a tap that failed
    or was killed half-way leaves it.
    """
    lines: list[dict[str, Any]] = [
        {"type": "SCHEMA", "stream": stream, "schema": SCHEMA, "key_properties": ["id"]}
    ]
    for i in numbers:
        record: dict[str, Any] = {"type": "RECORD", "stream": stream, "record": make_record(i)}
        if version is not None:
            record["version"] = version
        lines.append(record)
    if activate:
        lines.append({"type": "ACTIVATE_VERSION", "stream": stream, "version": version})
    return lines


def flags(rows: dict[str, tuple[Any, Any]]) -> dict[str, tuple[Any, bool]]:
    """{id: (version, flagged)} of `TargetUnderTest.rows()`."""
    return {key: (version, deleted_at is not None) for key, (version, deleted_at) in rows.items()}


def check_reconciliations(target: TargetUnderTest) -> None:
    """Reconciliations into a table that predates record metadata, as a target must load them."""
    # A table loaded before metadata was on: no version, no _sdc_deleted_at.
    target.load(version_messages(range(6), None, activate=False), metadata=False)
    assert not {"_sdc_table_version", "_sdc_deleted_at"} & target.columns()

    # Reconciliation 1000 reads 0-3: the table gains the columns; 4 and 5, without a
    # version, are flagged; no row of version 1000 is.
    target.load(version_messages(range(4), 1000))
    assert {"_sdc_table_version", "_sdc_deleted_at"} <= target.columns()
    first = target.rows()
    assert flags(first) == {
        **{rid(i): (1000, False) for i in range(4)},
        rid(4): (None, True),
        rid(5): (None, True),
    }

    # Reconciliation 2000 reads 1, 2 and 4: 4 is back (unflagged), 0 and 3 are flagged,
    # and 5, flagged already, keeps the time it was first flagged at.
    target.load(version_messages([1, 2, 4], 2000))
    second = target.rows()
    assert flags(second) == {
        rid(0): (1000, True),
        rid(1): (2000, False),
        rid(2): (2000, False),
        rid(3): (1000, True),
        rid(4): (2000, False),
        rid(5): (None, True),
    }
    assert second[rid(5)][1] == first[rid(5)][1]

    # Reconciliation 3000 is cut off after record 2: no ACTIVATE_VERSION, nothing flagged.
    target.load(version_messages([2], 3000, activate=False))
    assert flags(target.rows()) == {**flags(second), rid(2): (3000, False)}

    # Reconciliation 4000 with hard_delete reads 1 and 2: every other row is gone,
    # flagged (0, 3, 5) or not (4, of version 2000).
    target.load(version_messages([1, 2], 4000), hard_delete=True)
    assert flags(target.rows()) == {rid(1): (4000, False), rid(2): (4000, False)}


def check_crash_after_activation(target: TargetUnderTest) -> None:
    """A target that dies right after an ACTIVATE_VERSION has written that version's rows.

    The version's records are still in the target's batch when ACTIVATE_VERSION
    arrives; a target that flagged before writing them, then died before its last
    drain, would leave every one of them flagged.
    """
    target.load(version_messages(range(4), 1000))
    lines = version_messages(range(3), 2000)
    lines.append({"type": "RECORD", "stream": "no_such_stream", "record": {"id": "x"}})
    result = target.load(lines, check=False)
    assert result.returncode != 0
    assert flags(target.rows()) == {
        **{rid(i): (2000, False) for i in range(3)},
        rid(3): (1000, True),
    }


def check_empty_version(target: TargetUnderTest) -> None:
    """A version with no records: nothing to flag in a new table, every row in an old one."""
    target.load(version_messages([], 1000))
    assert target.rows() == {}
    target.load(version_messages(range(2), 2000))
    target.load(version_messages([], 3000))  # the API has no record of the stream left
    assert flags(target.rows()) == {rid(0): (2000, True), rid(1): (2000, True)}


#: The target's CLI, as Meltano runs it, from this checkout.
TARGET_COMMAND = [
    sys.executable,
    "-c",
    "from target_duckdb_local.target import TargetDuckDBLocal; TargetDuckDBLocal.cli()",
]


def run_target(
    db: Path, lines: list[dict[str, Any]], **config: Any
) -> subprocess.CompletedProcess[str]:
    """Run target-duckdb-local as its own process on these messages."""
    config_file = db.with_suffix(".config.json")
    config_file.write_text(json.dumps({"path": str(db), **config}))
    return subprocess.run(
        [*TARGET_COMMAND, "--config", str(config_file)],
        input="".join(json.dumps(line) + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR)},
    )


class DuckDBTarget(TargetUnderTest):
    """target-duckdb-local loading one DuckDB file."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def run(self, lines: list[dict[str, Any]], **config: Any) -> subprocess.CompletedProcess[str]:
        return run_target(self.db, lines, **config)

    def rows(self) -> dict[str, tuple[Any, Any]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            query = "SELECT id, _sdc_table_version, _sdc_deleted_at FROM users"
            return {row[0]: (row[1], row[2]) for row in con.execute(query).fetchall()}

    def columns(self) -> set[str]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return {row[0] for row in con.execute("DESCRIBE users").fetchall()}


def test_reconciliations_flag_exactly_the_rows_of_older_versions(tmp_path: Path) -> None:
    target = DuckDBTarget(tmp_path / "versions.duckdb")
    check_reconciliations(target)


def test_activate_version_writes_the_pending_rows_first(tmp_path: Path) -> None:
    target = DuckDBTarget(tmp_path / "crash.duckdb")
    check_crash_after_activation(target)


def test_a_version_without_records(tmp_path: Path) -> None:
    target = DuckDBTarget(tmp_path / "empty.duckdb")
    check_empty_version(target)


def test_versions_are_compared_across_batches(tmp_path: Path) -> None:
    """Rows of the version written in earlier batches of the run are not flagged."""
    db = tmp_path / "batches.duckdb"
    assert run_target(db, version_messages(range(10), 1000)).returncode == 0
    result = run_target(db, version_messages(range(2, 9), 2000), batch_size_rows=3)
    assert result.returncode == 0, result.stderr[-3000:]
    assert flags(DuckDBTarget(db).rows()) == {
        **{rid(i): (2000, False) for i in range(2, 9)},
        **{rid(i): (1000, True) for i in (0, 1, 9)},
    }
    assert "flagged (_sdc_deleted_at set) 3 rows" in result.stderr


def test_activate_version_without_metadata_is_ignored(tmp_path: Path) -> None:
    """With add_record_metadata off no row has a version: flagging would hit every live row."""
    target = DuckDBTarget(tmp_path / "nometa.duckdb")
    target.load(version_messages(range(3), None, activate=False), metadata=False)
    result = target.load(version_messages(range(2), 1000), metadata=False)
    assert "ACTIVATE_VERSION 1000 ignored: add_record_metadata is false" in result.stderr
    assert not {"_sdc_table_version", "_sdc_deleted_at"} & target.columns()
    with duckdb.connect(str(target.db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM users").fetchall() == [(3,)]


def test_about_declares_activate_version_and_hard_delete() -> None:
    result = subprocess.run(
        [*TARGET_COMMAND, "--about", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(PLUGIN_DIR)},
    )
    about = json.loads(result.stdout)
    assert {"activate-version", "hard-delete"} <= set(about["capabilities"])
    settings = about["settings"]["properties"]
    assert settings["add_record_metadata"]["default"] is True
    assert settings["hard_delete"]["default"] is False
    assert settings["process_activate_version_messages"]["default"] is True
