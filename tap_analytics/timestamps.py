"""Timestamps in the forms the tap meets: the API's (`+0000`), Singer's (`+00:00`), instants.

One module so that every conversion agrees, and so that nothing depends on the SDK's private
patch of `datetime.fromisoformat` (on Python 3.10 it reads neither `Z` nor `+0000`).
"""

from __future__ import annotations

import typing as t
from datetime import datetime, timezone


def rfc3339(value: t.Any) -> t.Any:
    """`…+0000` or `…Z` → `…+00:00`, the one form the tap emits; other values unchanged."""
    if isinstance(value, str) and len(value) > 5:
        if value[-5] in "+-":
            return f"{value[:-2]}:{value[-2:]}"
        if value[-1] == "Z":
            return f"{value[:-1]}+00:00"
    return value


def parse(value: str) -> datetime:
    """An ISO 8601 date or instant in any form the API or a user writes; naive means UTC.

    Raises ValueError for anything else.
    """
    parsed = datetime.fromisoformat(rfc3339(value.strip()))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def epoch(value: str) -> float:
    """Seconds since the epoch of a timestamp string, for ordering instants in any form."""
    return parse(value).timestamp()


def api_form(value: str | datetime) -> str:
    """An instant as the reference writes it for the time filters: UTC, whole seconds, `+0000`.

    Fractions are dropped: the API stamps whole seconds, so no record lies between.
    """
    instant = parse(value) if isinstance(value, str) else value
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+0000")


def now() -> datetime:
    """This machine's clock, in UTC (the API's clock, from `Date`, is preferred where known)."""
    return datetime.now(timezone.utc)
