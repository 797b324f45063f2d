# SQL here is built from identifiers and literals quoted by quote_ident/quote_literal.
# ruff: noqa: S608
"""target-duckdb-local: a lossless Singer target for a local DuckDB file.

Why this exists (instead of PyPI's ``target-duckdb``): that target stages each
batch as a header-less CSV file and loads it with ``COPY ... FROM`` without
``header false``, so DuckDB's CSV sniffer guesses whether the first row is a
header.  With DuckDB >= 1.3 the first row of every batch is taken as a header
(and silently skipped) whenever a ``date-time`` value carries an offset
(``Z``/``+00:00``); with any DuckDB version the same happens when the first
row's values are all text.  One-record batches then load nothing at all.

This target never goes through CSV: each batch is written as newline-delimited
JSON and read back with ``read_json`` and an explicit column list (no type,
header or dialect sniffing), the staged row count is checked against the
number of records received, and the batch is merged on the stream's key
properties in one transaction (delete matching keys, insert).

ACTIVATE_VERSION is handled as MeltanoLabs target-postgres does: RECORDs carry
their table version in ``_sdc_table_version``; on ACTIVATE_VERSION the stream's
pending rows are written first, then every row whose version is older than the
activated one, or missing, gets ``_sdc_deleted_at`` (or is deleted, with
``hard_delete``). A row sent again in a later version replaces the flagged one,
so it comes back unflagged.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import typing as t
import uuid
from pathlib import Path

import duckdb
import simplejson
from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TargetCapabilities,
)
from singer_sdk.sinks import BatchSink

# JSON schema type -> DuckDB column type.  Anything that is not a single,
# well-defined JSON type is stored as JSON text, which never loses a value.
_SIMPLE_TYPES = {
    "integer": "BIGINT",
    "number": "DOUBLE",
    "boolean": "BOOLEAN",
    "object": "JSON",
    "array": "JSON",
}
_STRING_FORMATS = {"date-time": "TIMESTAMPTZ", "date": "DATE"}
# Types that read_json gets as VARCHAR and SQL then casts (strict, never guessed).
_CAST_IN_SQL = {"TIMESTAMPTZ", "DATE"}

_MAX_OBJECT_SIZE = 256 * 1024 * 1024


def quote_ident(name: str) -> str:
    """Quote a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"


def _json_types(schema: dict) -> set[str]:
    """Return the non-null JSON types a property schema allows."""
    types: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            types |= _json_types(sub)
    declared = schema.get("type")
    if isinstance(declared, str):
        types.add(declared)
    elif isinstance(declared, list):
        types.update(declared)
    types.discard("null")
    return types


def _string_format(schema: dict) -> str | None:
    if schema.get("format"):
        return str(schema["format"])
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, []):
            if "string" in _json_types(sub) and sub.get("format"):
                return str(sub["format"])
    return None


def column_type(schema: dict) -> str:
    """Map a JSON schema property to a DuckDB column type."""
    types = _json_types(schema)
    if len(types) != 1:
        return "JSON"  # no type, or a mix of types: keep the JSON value as is
    (json_type,) = types
    if json_type == "string":
        return _STRING_FORMATS.get(_string_format(schema) or "", "VARCHAR")
    return _SIMPLE_TYPES.get(json_type, "JSON")


def table_name_for(stream_name: str) -> str:
    """Derive a table name from a stream name (``my-stream`` -> ``my_stream``)."""
    return re.sub(r"[^0-9a-zA-Z_]+", "_", stream_name).lower()


def _json_default(value: t.Any) -> t.Any:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:  # Singer convention: naive means UTC
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def dump_record(record: dict) -> str:
    """Serialise one record as a JSON line (decimals and big integers exact)."""
    return simplejson.dumps(record, use_decimal=True, default=_json_default, separators=(",", ":"))


class DuckDBSink(BatchSink):
    """Merge batches of one stream into one DuckDB table."""

    target: TargetDuckDBLocal

    #: The SDK's record metadata columns that ACTIVATE_VERSION works with.
    version_column = "_sdc_table_version"
    soft_delete_column = "_sdc_deleted_at"

    def __init__(self, target: TargetDuckDBLocal, *args: t.Any, **kwargs: t.Any) -> None:
        self.target = target
        super().__init__(target, *args, **kwargs)
        self.schema_name = self.config.get("default_target_schema") or "main"
        self.table_name = table_name_for(self.stream_name)
        self.full_table_name = f"{quote_ident(self.schema_name)}.{quote_ident(self.table_name)}"
        self.columns = {
            name: column_type(prop) for name, prop in self.schema.get("properties", {}).items()
        }

    @property
    def load_method(self) -> str:
        """The configured load method (``upsert`` unless set)."""
        return str(self.config.get("load_method") or "upsert")

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The target's DuckDB connection."""
        return self.target.connection

    def setup(self) -> None:
        """Create the schema and table, and add any columns the table lacks."""
        super().setup()
        con = self.connection
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema_name)}")
        column_defs = ", ".join(
            f"{quote_ident(name)} {ctype}" for name, ctype in self.columns.items()
        )
        con.execute(f"CREATE TABLE IF NOT EXISTS {self.full_table_name} ({column_defs})")
        # A table created before a column existed (or before record metadata was on)
        # gains it here; its old rows hold NULL, e.g. no table version.
        self._add_missing_columns(self.columns)

    def _existing_columns(self) -> set[str]:
        """The table's column names, lower-cased (empty when the table does not exist)."""
        rows = self.connection.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ?",
            [self.schema_name, self.table_name],
        ).fetchall()
        return {row[0].lower() for row in rows}

    def _add_missing_columns(self, columns: dict[str, str]) -> None:
        existing = self._existing_columns()
        for name, ctype in columns.items():
            if name.lower() not in existing:
                self.logger.info("Adding column %s %s to %s", name, ctype, self.full_table_name)
                self.connection.execute(
                    f"ALTER TABLE {self.full_table_name} ADD COLUMN {quote_ident(name)} {ctype}"
                )

    def _deduplicate(self, records: list[dict]) -> list[dict]:
        """Keep the last record of each key within a batch."""
        if not self.key_properties or self.load_method == "append-only":
            return records
        latest: dict[tuple, dict] = {}
        for record in records:
            key = tuple(dump_record(record.get(prop)) for prop in self.key_properties)
            if key in latest:
                self.tally_duplicate_merged()
                del latest[key]  # keep arrival order of the last version
            latest[key] = record
        return list(latest.values())

    def process_batch(self, context: dict) -> None:
        """Stage the batch with read_json and merge it in one transaction."""
        records = self._deduplicate(context.get("records", []))
        if not records:
            return
        names = list(self.columns)
        fd, path = tempfile.mkstemp(prefix="target-duckdb-local-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(dump_record({k: record.get(k) for k in names}))
                    handle.write("\n")
            self._merge(path, names, len(records))
        finally:
            Path(path).unlink(missing_ok=True)

    def _merge(self, path: str, names: list[str], expected: int) -> None:
        con = self.connection
        stage = quote_ident(f"stage_{self.table_name}_{uuid.uuid4().hex[:12]}")
        read_types = {
            name: ("VARCHAR" if ctype in _CAST_IN_SQL else ctype)
            for name, ctype in self.columns.items()
        }
        struct = ", ".join(
            f"{quote_literal(name)}: {quote_literal(ctype)}" for name, ctype in read_types.items()
        )
        select = ", ".join(
            (
                f"CAST({quote_ident(name)} AS {ctype}) AS {quote_ident(name)}"
                if ctype in _CAST_IN_SQL
                else quote_ident(name)
            )
            for name, ctype in self.columns.items()
        )
        cols = ", ".join(quote_ident(name) for name in names)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                f"CREATE TEMP TABLE {stage} AS SELECT {select} FROM read_json("
                f"{quote_literal(path)}, format = 'newline_delimited', "
                f"records = true, columns = {{{struct}}}, "
                f"maximum_object_size = {_MAX_OBJECT_SIZE})"
            )
            staged = con.execute(f"SELECT count(*) FROM {stage}").fetchall()[0][0]
            if staged != expected:
                msg = (
                    f"{self.stream_name}: staged {staged} rows but received "
                    f"{expected} records; refusing to load a partial batch"
                )
                raise RuntimeError(msg)
            if self.load_method == "overwrite":
                if self.full_table_name not in self.target.overwritten_tables:
                    con.execute(f"DELETE FROM {self.full_table_name}")
                    self.target.overwritten_tables.add(self.full_table_name)
            elif self.load_method == "upsert" and self.key_properties:
                condition = " AND ".join(
                    f"{self.full_table_name}.{quote_ident(k)} "
                    f"IS NOT DISTINCT FROM {stage}.{quote_ident(k)}"
                    for k in self.key_properties
                )
                con.execute(f"DELETE FROM {self.full_table_name} USING {stage} WHERE {condition}")
            con.execute(f"INSERT INTO {self.full_table_name} ({cols}) SELECT {cols} FROM {stage}")
            con.execute(f"DROP TABLE {stage}")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.logger.info(
            "Merged %d rows into %s (%s)", expected, self.full_table_name, self.load_method
        )

    def activate_version(self, new_version: int) -> None:
        """Write the pending rows, then flag (or delete) rows of older or missing versions.

        The same semantics as MeltanoLabs target-postgres: a row whose
        ``_sdc_table_version`` is below ``new_version`` or NULL (loaded without a
        version, e.g. by an incremental run or before metadata was on) is not in the
        activated version; rows already flagged keep their first ``_sdc_deleted_at``.
        """
        if not self.include_sdc_metadata_properties:
            # Without metadata no row carries a version, so every row would look stale.
            self.logger.warning(
                "%s: ACTIVATE_VERSION %s ignored: add_record_metadata is false, so rows "
                "carry no table version; set add_record_metadata to true to flag deleted rows",
                self.stream_name,
                new_version,
            )
            return
        # The rows of this version still in the batch must be in the table first.
        self.target.drain_one(self)
        existing = self._existing_columns()
        if not existing:
            return  # no table, nothing to flag (target-postgres does the same)
        hard_delete = bool(self.config.get("hard_delete"))
        needed = {self.version_column: "BIGINT"}
        if not hard_delete:
            needed[self.soft_delete_column] = "TIMESTAMPTZ"
        self._add_missing_columns(needed)
        version = quote_ident(self.version_column)
        deleted_at = quote_ident(self.soft_delete_column)
        stale = f"({version} IS NULL OR {version} < ?)"
        con = self.connection
        con.execute("BEGIN TRANSACTION")
        try:
            if hard_delete:
                sql = f"DELETE FROM {self.full_table_name} WHERE {stale}"
                params: list[t.Any] = [new_version]
            else:
                sql = (
                    f"UPDATE {self.full_table_name} SET {deleted_at} = ? "
                    f"WHERE {stale} AND {deleted_at} IS NULL"
                )
                params = [datetime.datetime.now(datetime.timezone.utc), new_version]
            affected = con.execute(sql, params).fetchall()[0][0]
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.logger.info(
            "%s: activated version %s: %s %d rows of older or missing versions in %s",
            self.stream_name,
            new_version,
            "deleted" if hard_delete else "flagged (_sdc_deleted_at set)",
            affected,
            self.full_table_name,
        )


class TargetDuckDBLocal(Target):
    """Singer target that writes to a local DuckDB database file."""

    name = "target-duckdb-local"
    default_sink_class = DuckDBSink
    # ACTIVATE_VERSION also brings the SDK's `process_activate_version_messages` setting.
    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [
        *Target.capabilities,
        PluginCapabilities.ACTIVATE_VERSION,
        TargetCapabilities.HARD_DELETE,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "path",
            th.StringType,
            default="output/warehouse.duckdb",
            title="Database path",
            description="Path of the DuckDB database file (created if missing).",
        ),
        th.Property(
            "default_target_schema",
            th.StringType,
            default="main",
            title="Default target schema",
            description="DuckDB schema the tables are written to.",
        ),
        th.Property(
            "load_method",
            th.StringType,
            default="upsert",
            allowed_values=["upsert", "append-only", "overwrite"],
            title="Load method",
            description=(
                "`upsert` (default) replaces rows with the same key properties and "
                "inserts new ones; `append-only` always inserts; `overwrite` empties "
                "each table before its first batch of the run."
            ),
        ),
        th.Property(
            "add_record_metadata",
            th.BooleanType,
            default=True,
            title="Add record metadata",
            description=(
                "Add the `_sdc_*` metadata columns (extracted, received, batched and "
                "deleted at, sequence, table version), also to existing tables. On by "
                "default: ACTIVATE_VERSION needs `_sdc_table_version` and "
                "`_sdc_deleted_at`, and is ignored (with a warning) when this is false."
            ),
        ),
        th.Property(
            "hard_delete",
            th.BooleanType,
            default=False,
            title="Hard delete",
            description=(
                "On ACTIVATE_VERSION, delete the rows of older or missing table versions "
                "instead of setting their `_sdc_deleted_at` (the default, which keeps them)."
            ),
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_parallelism = 1  # one DuckDB connection, used by one thread
        self._connection: duckdb.DuckDBPyConnection | None = None
        self.overwritten_tables: set[str] = set()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """Open (once) and return the DuckDB connection."""
        if self._connection is None:
            path = str(self.config.get("path") or "output/warehouse.duckdb")
            if path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
                path = str(Path(path).expanduser())
            self.logger.info("Opening DuckDB database %s", path)
            self._connection = duckdb.connect(path)
        return self._connection

    def process_endofpipe(self) -> None:
        """Drain all sinks, then close the database (checkpointing it)."""
        super().process_endofpipe()
        if self._connection is not None:
            self._connection.close()
            self._connection = None


if __name__ == "__main__":
    TargetDuckDBLocal.cli()
