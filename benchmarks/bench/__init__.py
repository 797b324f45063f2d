"""The benchmark's parts; `benchmarks/run.py` is its command."""

from __future__ import annotations


def log(message: str) -> None:
    """Progress for the person watching, on stdout (the report follows it there)."""
    print(message, flush=True)
