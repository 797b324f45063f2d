"""The tap's STATE: one format version, and the one place that reads every released format.

STATE keeps the SDK's layout for bookmarks (`bookmarks.<stream>.replication_key_value`), so
`meltano state` and every Singer tool read it as they always have. What is the tap's own lives
under `tap_analytics`, with a `format` number:

* format 1 (tap-analytics 0.1.0): SDK bookmarks only, no `tap_analytics` key;
* format 2: the same bookmarks, and under `tap_analytics`: `format`; `accounts`, the accounts
  each stream has read whole (groups of streams that share one list of ids); `backfills`, the
  backfills of accounts new to a stream still under way, with how far each has come
  (`accounts.py`). A stream with a bookmark and no coverage (format 1) counts every account
  visible at its next run as read whole, as 0.1.0 did.

`migrate()` turns any of them into the current format before the run reads it, so a STATE
written by any released version keeps working; a STATE from a newer release is refused rather
than misread.
"""

from __future__ import annotations

import copy
import typing as t

from tap_analytics.errors import AnalyticsError

#: The format this release writes.
FORMAT = 2
#: Where the tap's own part of STATE lives.
KEY = "tap_analytics"

#: Keys the SDK writes during a sync that mean nothing once a run has ended.
_PROGRESS_KEYS = ("progress_markers", "starting_replication_value", "replication_key_signpost")


class StateFormatError(AnalyticsError):
    """STATE that this release cannot read."""


def format_of(state: t.Mapping[str, t.Any]) -> int:
    """The format a STATE was written in (1 for the releases before formats were numbered)."""
    own = state.get(KEY)
    if own is None:
        return 1
    number = own.get("format") if isinstance(own, dict) else None
    if not isinstance(number, int) or number < 1:
        msg = f"STATE: {KEY}.format is {number!r}, not a format number; pass a STATE this tap wrote"
        raise StateFormatError(msg)
    return number


def migrate(state: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """A copy of `state` in the current format, whatever released format it was written in."""
    number = format_of(state)
    if number > FORMAT:
        msg = (
            f"STATE was written in format {number} by a newer tap-analytics; this one reads up "
            f"to format {FORMAT}: upgrade tap-analytics, or clear the state to start over"
        )
        raise StateFormatError(msg)
    migrated = copy.deepcopy(dict(state))
    bookmarks = migrated.setdefault("bookmarks", {})
    if not isinstance(bookmarks, dict):
        raise StateFormatError("STATE: 'bookmarks' is not an object; pass a STATE this tap wrote")
    for stream_state in bookmarks.values():
        # A run killed mid-stream by an SDK-driven path can leave these; the bookmark beside
        # them is what was written, so dropping them loses nothing.
        for key in _PROGRESS_KEYS:
            stream_state.pop(key, None)
    migrated[KEY] = {**migrated.get(KEY, {}), "format": FORMAT}
    return migrated


def bookmark(state: t.Mapping[str, t.Any], stream: str) -> str | None:
    """The stream's bookmark: where its next window starts (inclusive), if it has one."""
    value = state.get("bookmarks", {}).get(stream, {}).get("replication_key_value")
    return str(value) if value else None
