"""Reading one time window completely while the data under it changes."""

from __future__ import annotations

import math
import typing as t
from dataclasses import dataclass, replace

import msgspec

from tap_analytics.timestamps import epoch

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    Record = dict[str, t.Any]


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
    """What the next request asks for: a window `[updated_since, updated_until)` and an offset.

    `accounts` narrows the request to those accounts (the `user_id` filter, at most 50); None
    leaves the job's own scope (its `user_ids`, or every account the key sees).
    """

    updated_since: str | None
    updated_until: str | None
    offset: int
    accounts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Window:
    """What a reader reads: `[updated_since, updated_until)` of some accounts' records.

    No `updated_until`: the window ends at the API's clock when its first page is read. No
    `accounts`: the job's own scope (its `user_ids`, or every account the key sees).
    """

    updated_since: str | None
    updated_until: str | None
    accounts: tuple[str, ...] | None


class KeysetPaginator:
    """Pages through a time window by moving `updated_since` forward, not only the offset.

    The API orders records by (`updated_at`, `id`) and evaluates offsets against the data as it
    is at each request, so a plain offset walk skips records when earlier ones leave the window.
    After each page this paginator moves `updated_since` to the last record's `updated_at`
    (inclusive) and asks for the page that starts at the last record already read among those
    tied at that instant. A record already read must come back first: if one does not, records
    before it have left, and the walk re-reads the tie group from its start, dropping what it
    has seen. (A page that starts earlier, records having joined the group before it, loses
    nothing: the walk goes on from that page's last record.)
    Records only leave a window during a run (changes land after its upper end), so every
    record present for the whole run is read at least once and the walk always ends. Without
    an upper end (a reconciliation's catch-up), a changed record moves ahead of the walk, so
    the walk still reads every record, but ends only once the data rests.
    """

    def __init__(
        self,
        updated_since: str | None,
        updated_until: str | None,
        page_size: int,
        accounts: tuple[str, ...] | None = None,
    ) -> None:
        if page_size < 2:
            raise ValueError("the walk needs pages of at least 2 records: one of them overlaps")
        #: The request for the next page, and whether the walk has passed the window's end.
        self.current_value = WindowCursor(updated_since, updated_until, 0, accounts)
        self.finished = False
        self._page_size = page_size
        #: Ids at `updated_since` this walk has returned.
        self._seen_ids: set[str] = set()

    @classmethod
    def resume_after(
        cls,
        updated_at: str,
        tied_ids: set[str],
        updated_until: str,
        page_size: int,
        accounts: tuple[str, ...] | None = None,
    ) -> KeysetPaginator:
        """A walk that goes on after records already read; `tied_ids` are those at `updated_at`."""
        paginator = cls(updated_at, updated_until, page_size, accounts)
        paginator._seen_ids = set(tied_ids)
        paginator.current_value = replace(paginator.current_value, offset=len(tied_ids) - 1)
        return paginator

    def advance(self, page: Envelope) -> None:
        """Move on past `page`: to the next request, or to the end of the walk."""
        if not self.has_more(page):
            self.finished = True
            return
        cursor = self.get_next(page)
        if cursor == self.current_value:
            msg = f"the keyset walk would ask for {cursor} again: a bug, not the data"
            raise RuntimeError(msg)
        self.current_value = cursor

    def unread(self, page: Envelope) -> list[dict[str, t.Any]]:
        """The page's records this walk has not returned before ([] when the page shifted)."""
        if self._shifted(page):
            return []
        return [record for record in page.data if not self._already_read(record)]

    def has_more(self, response: Envelope) -> bool:
        """Whether the window holds records after this page (or the page must be asked again)."""
        if self._shifted(response):
            return True
        records, total = response.data, response.paging.total
        reached_total = total is not None and self.current_value.offset + len(records) >= total
        return len(records) == self._page_size and not reached_total

    def get_next(self, response: Envelope) -> WindowCursor:
        """The request for the page after this one."""
        cursor = self.current_value
        if self._shifted(response):
            return replace(cursor, offset=0)
        last_updated_at = response.data[-1]["updated_at"]
        tied = {record["id"] for record in response.data if record["updated_at"] == last_updated_at}
        if last_updated_at == cursor.updated_since:  # the whole page is of the one instant
            offset = cursor.offset + len(response.data) - 1
        else:  # the page ends with the first records of a later instant
            self._seen_ids = set()
            offset = len(tied) - 1
        self._seen_ids |= tied
        # Start at the last record read, one of overlap, so that a shift shows.
        return replace(cursor, updated_since=last_updated_at, offset=offset)

    def _shifted(self, page: Envelope) -> bool:
        """Whether a page asked for with an overlap failed to start at a record already read."""
        if not self.current_value.offset:
            return False
        return not page.data or not self._already_read(page.data[0])

    def _already_read(self, record: dict[str, t.Any]) -> bool:
        return (
            record["updated_at"] == self.current_value.updated_since
            and record["id"] in self._seen_ids
        )


class OverlapChain:
    """Reads a window from offset pages fetched side by side, joined where they overlap.

    Page k asks for offset k*(L-1), so it starts with the last record of page k-1. Pages are
    fetched at different moments while records leave the window (changes land after its end),
    which moves later records to lower offsets. A page that holds the last record written
    joins on: what follows that record is new. A page that does not shows a gap, and a keyset
    walk from the last record written reads on until it has passed that page. Records come
    out in the API's order, each once, and every record present for the whole run among them.
    """

    def __init__(
        self,
        updated_since: str | None,
        updated_until: str | None,
        page_size: int,
        accounts: tuple[str, ...] | None = None,
    ) -> None:
        if page_size < 2:
            raise ValueError("the chain needs pages of at least 2 records: one of them overlaps")
        self.updated_since = updated_since
        self.updated_until = updated_until
        self.accounts = accounts
        self.page_size = page_size
        #: `updated_at` and `id` of the last record handed out, and the ids handed out at
        #: that same instant: where a walk resumes.
        self.last: tuple[str, str] | None = None
        self._tied_ids: set[str] = set()

    def cursor(self, index: int) -> WindowCursor:
        """The request for page `index`."""
        offset = index * (self.page_size - 1)
        return WindowCursor(self.updated_since, self.updated_until, offset, self.accounts)

    def pages_for(self, total: int | None) -> int:
        """How many pages a window of `total` records takes (1 while that is unknown)."""
        if total is None or total <= self.page_size:
            return 1
        return 1 + math.ceil((total - self.page_size) / (self.page_size - 1))

    def ends_window(self, index: int, page: Envelope) -> bool:
        """Whether nothing followed this page when it was read: it is short or reached total."""
        records, total = len(page.data), page.paging.total
        offset = index * (self.page_size - 1)
        return records < self.page_size or (total is not None and offset + records >= total)

    def first_page_stands_in(self, page: Envelope) -> bool:
        """Whether a first page asked before the window's end was known can be its page 0.

        It was read when no record was stamped later than the window's end, so it is the
        window's first page then, unless it holds records at or past that end. A record
        changed after it was read may be missing from it, but such a record sorts last in the
        window, where later pages (asked once the window's end is known) find it. So the page
        stands in only if it does not end the window.
        """
        assert self.updated_until is not None
        if self.ends_window(0, page):
            return False
        return epoch(page.data[-1]["updated_at"]) < epoch(self.updated_until)

    def read(
        self,
        page_at: Callable[[int], Envelope],
        fetch: Callable[[WindowCursor], Envelope],
    ) -> Iterator[list[Record]]:
        """The window's records, a batch at a time.

        `page_at(k)` gives page k, fetched ahead in any order; `fetch` sends a walk's request.
        """
        index = 0
        while True:
            page = page_at(index)
            ends = self.ends_window(index, page)
            records = self._join(index, page)
            if records is None:
                walked_to_end = yield from self._walk(fetch, None if ends else page.data[-1])
                if walked_to_end:
                    return
            elif records:
                self._hand_out(records)
                yield records
            if ends:
                return
            index += 1

    def _join(self, index: int, page: Envelope) -> list[Record] | None:
        """The page's records after the last one handed out; None when it is not there."""
        if index == 0:
            return page.data
        assert self.last is not None, "page 0 ends the window when it is empty"
        last_id = self.last[1]
        for position, record in enumerate(page.data):
            if record["id"] == last_id:
                return page.data[position + 1 :]
        return None

    def _walk(
        self, fetch: Callable[[WindowCursor], Envelope], stop: Record | None
    ) -> Generator[list[Record], None, bool]:
        """Walk by keyset from the last record handed out; say whether it reached the end.

        The walk stops at `stop` (a page's last record), or goes to the window's end.
        """
        assert self.last is not None
        assert self.updated_until is not None, "a walk starts once the window's end is known"
        updated_at, _ = self.last
        walk = KeysetPaginator.resume_after(
            updated_at, self._tied_ids, self.updated_until, self.page_size, self.accounts
        )
        while not walk.finished:
            page = fetch(walk.current_value)
            records = walk.unread(page)
            walk.advance(page)
            if stop is not None:
                for position, record in enumerate(records):
                    # `stop` itself, or the first record after it should `stop` have left.
                    if record["id"] == stop["id"] or record["updated_at"] > stop["updated_at"]:
                        records = records[: position + 1]
                        self._hand_out(records)
                        yield records
                        return False
            if records:
                self._hand_out(records)
                yield records
        return True

    def _hand_out(self, records: list[Record]) -> None:
        updated_at = records[-1]["updated_at"]
        if self.last is None or self.last[0] != updated_at:
            self._tied_ids = set()
        for record in reversed(records):
            if record["updated_at"] != updated_at:
                break
            self._tied_ids.add(record["id"])
        self.last = (updated_at, records[-1]["id"])
