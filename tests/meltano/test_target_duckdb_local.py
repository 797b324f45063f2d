"""The embedded DuckDB loader (plugins/loaders/target-duckdb-local) loses nothing.

These tests feed hand-written Singer messages to the target in-process. They use
the cases that PyPI's target-duckdb 0.8.0 silently drops or alters: a one-record
batch whose date-time values carry an offset (`+00:00`, `Z`), 20-digit string ids,
integers above 2**31 and 2**53, nested objects of big integers, and empty or
all-text strings.
"""

from __future__ import annotations

import io
import json
import sys
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
