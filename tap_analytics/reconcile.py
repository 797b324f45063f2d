"""Reconciliation: a full read whose RECORDs carry a table version, activated only when whole.

The API keeps no tombstones, so a delete shows only as a record missing from a full read. A
reconciliation reads a stream completely, every RECORD carrying this run's version (from the
API's clock), and only when the stream has been read to the end without error writes
ACTIVATE_VERSION, after its last record: the target then flags (or deletes) every row of an
older or no version. Before that, it reads on past the window's end, round after round, to the
current end of the data, so that a record changed during the read is in the version too. A
record present at the end was read in some round, so no live row is flagged:

* the full read starts where the earliest run of this STATE started (`start_floor`), so rows
  loaded before `start_date` was moved forward are read, not flagged;
* a run that fails or is killed writes no ACTIVATE_VERSION for a stream it did not finish;
* the catch-up is a keyset walk from the full read's end with no upper bound: a record
  changed meanwhile moves ahead of it, so when it reaches the end of the data every record
  live then has been read. If the data has not rested after MAX_CATCH_UP_PAGES pages, no
  version is activated for the stream.
"""

from __future__ import annotations

import typing as t

from tap_analytics import timestamps
from tap_analytics.pagination import KeysetPaginator, Window
from tap_analytics.scheduler import Page

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tap_analytics.scheduler import PageSource, StreamReader

#: Pages the catch-up reads before a stream whose data never rests is given up (each page
#: holds records changed since the full read, so this is 100 times the page size of changes).
MAX_CATCH_UP_PAGES = 100


def next_version(own_state: dict[str, t.Any], clock: str) -> int:
    """This reconciliation's version: the API's clock in milliseconds, above every earlier one."""
    version = max(int(timestamps.epoch(clock) * 1000), int(own_state.get("version", 0)) + 1)
    own_state["version"] = version
    return version


def note_start(own_state: dict[str, t.Any], start: str | None, *, fresh: bool) -> None:
    """Keep the earliest start any run of this STATE read from (None: the beginning).

    A STATE from before this was kept (`fresh` false and no `start_floor`) leaves it unknown:
    reconciliations then read from the beginning.
    """
    if "start_floor" in own_state:
        floor = own_state["start_floor"]
        if floor is not None and (start is None or _before(start, floor)):
            own_state["start_floor"] = start
    elif fresh:
        own_state["start_floor"] = start


def start_floor(own_state: t.Mapping[str, t.Any]) -> str | None:
    """Where a reconciliation's full read starts: the earliest start of any run, if known."""
    floor = own_state.get("start_floor")
    return str(floor) if floor else None


class Reconciliation:
    """One stream's full read and catch-up; whether the data rested, and where the read ended."""

    def __init__(
        self,
        open_reader: Callable[[Window], StreamReader],
        stream: PageSource,
        floor: str | None,
    ) -> None:
        self._open = open_reader
        self._stream = stream
        self._floor = floor
        #: The data rested: the catch-up reached the end of the data.
        self.converged = False
        #: Everything before this was read (the full read's end).
        self.end: str | None = None

    def pages(self) -> Iterator[Page]:
        """The full read's pages, then the catch-up's, to the current end of the data."""
        for page in self._open(Window(self._floor, None, None)).pages():
            self.end = page.bookmark
            yield page
        assert self.end is not None
        walk = KeysetPaginator(self.end, None, self._stream.page_size)
        for _ in range(MAX_CATCH_UP_PAGES):
            envelope = self._stream.fetch_page(walk.current_value)
            records = walk.unread(envelope)
            walk.advance(envelope)
            if records:
                yield Page(self._stream.conform(records), self.end)
            if walk.finished:
                self.converged = True
                return


def _before(one: str, other: str) -> bool:
    return timestamps.epoch(one) < timestamps.epoch(other)
