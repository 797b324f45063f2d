"""A small, lossless Singer target for a local DuckDB file."""

from target_duckdb_local.target import DuckDBSink, TargetDuckDBLocal

__all__ = ["DuckDBSink", "TargetDuckDBLocal"]
