"""Reading one time window completely while the data under it changes."""

from __future__ import annotations

import typing as t
from dataclasses import dataclass

import msgspec
from singer_sdk.pagination import BaseAPIPaginator
from typing_extensions import override


class Paging(msgspec.Struct):
    """The `paging` object of a list response; `total` may be missing under load."""

    offset: int = 0
    limit: int = 0
    total: int | None = None


class Envelope(msgspec.Struct):
    """A list response: its records and its paging."""

    data: list[dict[str, t.Any]]
    paging: Paging = msgspec.field(default_factory=Paging)


#: Decodes a response body in one pass; a cut-off body raises msgspec.DecodeError.
decode_envelope = msgspec.json.Decoder(Envelope).decode


@dataclass(frozen=True)
class WindowCursor:
    """What the next request asks for: a window `[updated_since, updated_until)` and an offset."""

    updated_since: str | None
    updated_until: str
    offset: int


class KeysetPaginator(BaseAPIPaginator[WindowCursor]):
    """Pages through a time window by moving `updated_since` forward, not only the offset.

    The API orders records by (`updated_at`, `id`) and evaluates offsets against the data as it
    is at each request, so a plain offset walk skips records when earlier ones leave the window.
    After each page this paginator moves `updated_since` to the last record's `updated_at`
    (inclusive) and asks for the page that starts at the last record already read among those
    tied at that instant. That record must come back first: if it does not, records before it
    have left, and the walk re-reads the tie group from its start, dropping what it has seen.
    Records only leave a window during a run (changes land after its upper end), so every
    record present for the whole run is read at least once and the walk always ends.
    """

    def __init__(self, updated_since: str | None, updated_until: str, page_size: int) -> None:
        if page_size < 2:
            raise ValueError("the walk needs pages of at least 2 records: one of them overlaps")
        super().__init__(WindowCursor(updated_since, updated_until, 0))
        self._page_size = page_size
        self._tied_ids: set[str] = set()

    def narrow(self, updated_until: str) -> None:
        """End the walk earlier: later records belong to another walk."""
        self._value = WindowCursor(self._value.updated_since, updated_until, self._value.offset)

    def unread(self, page: Envelope) -> list[dict[str, t.Any]]:
        """The page's records this walk has not returned before ([] when the page shifted)."""
        if self._shifted(page):
            return []
        return [record for record in page.data if not self._already_read(record)]

    @override
    def has_more(self, response: Envelope) -> bool:  # type: ignore[override]
        if self._shifted(response):
            return True
        records, total = response.data, response.paging.total
        reached_total = total is not None and self._value.offset + len(records) >= total
        return len(records) == self._page_size and not reached_total

    @override
    def get_next(self, response: Envelope) -> WindowCursor:  # type: ignore[override]
        cursor = self._value
        if self._shifted(response):
            return WindowCursor(cursor.updated_since, cursor.updated_until, 0)
        last_updated_at = response.data[-1]["updated_at"]
        if last_updated_at != cursor.updated_since:
            self._tied_ids = set()
        self._tied_ids.update(
            record["id"] for record in response.data if record["updated_at"] == last_updated_at
        )
        # Start at the last record read, one of overlap, so that a shift shows.
        return WindowCursor(last_updated_at, cursor.updated_until, len(self._tied_ids) - 1)

    def _shifted(self, page: Envelope) -> bool:
        """Whether a page asked for with an overlap failed to start at a record already read."""
        if not self._value.offset:
            return False
        return not page.data or not self._already_read(page.data[0])

    def _already_read(self, record: dict[str, t.Any]) -> bool:
        return record["updated_at"] == self._value.updated_since and record["id"] in self._tied_ids
