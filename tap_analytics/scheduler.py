"""Fetching the pages of every selected stream concurrently, handing them over in order.

The SDK syncs one stream after another with one request in flight. Here a pool of worker
threads fetches pages for all selected streams at once, and a large stream's window is cut
into time slices walked side by side. The tap still emits one stream at a time, slice after
slice, page after page, so every RECORD comes out in `updated_at` order and every STATE claims
only what has been written. Buffers are bounded, so memory does not grow with the data.
"""

from __future__ import annotations

import itertools
import math
import threading
import typing as t
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from tap_analytics.pagination import Envelope, KeysetPaginator
from tap_analytics.records import rfc3339

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from tap_analytics.client import AnalyticsStream

#: Pages a slice may buffer ahead of the writer.
PAGES_PER_SLICE = 2


@dataclass
class Page:
    """Records ready to write, and the bookmark that is safe once they are written."""

    records: list[dict[str, t.Any]]
    bookmark: str
    closes_slice: bool


def _epoch(timestamp: str) -> int:
    return int(datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S%z").timestamp())


def _instant(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Slice:
    """A part `[since, until)` of a stream's window, walked by its own paginator."""

    def __init__(self, paginator: KeysetPaginator) -> None:
        self.paginator = paginator
        self.pages: deque[Page] = deque()
        self.in_flight = False
        #: Set, under the scheduler's lock, together with the slice's last page.
        self.done = False
        self.error: BaseException | None = None

    @property
    def fetchable(self) -> bool:
        return not (self.in_flight or self.done or self.error) and (
            len(self.pages) < PAGES_PER_SLICE
        )


class StreamReader:
    """One stream's window, split into slices once its first page shows how large it is."""

    def __init__(self, scheduler: PageScheduler, stream: AnalyticsStream) -> None:
        self.stream = stream
        self._scheduler = scheduler
        self.slices = [_Slice(stream.get_new_paginator())]
        self._split_pending = True

    def pages(self) -> Iterator[Page]:
        """Pages in order; raises the error of a slice that failed when its turn comes."""
        condition = self._scheduler.condition
        index = 0
        with condition:
            self._scheduler.current = self
            condition.notify_all()
        while True:
            with condition:
                while True:
                    current = self.slices[index]
                    if current.pages:
                        page = current.pages.popleft()
                        condition.notify_all()
                        break
                    if current.error is not None:
                        raise current.error
                    if current.done:
                        index += 1
                        if index == len(self.slices):
                            return
                        continue
                    condition.wait()
            yield page

    def fetch(self, part: _Slice) -> None:
        """Fetch a slice's next page (in a worker thread, outside the scheduler's lock)."""
        paginator = part.paginator
        envelope = self.stream.fetch_page(paginator.current_value)
        records = paginator.unread(envelope)
        closed = False
        new_slices: list[_Slice] = []
        if self._split_pending:
            self.stream.stats.expected_records = envelope.paging.total
        if self._split_pending and paginator.has_more(envelope):
            new_slices = self._split(part, envelope)
            if new_slices:
                split_at = new_slices[0].paginator.current_value.updated_since or ""
                within = [r for r in records if _epoch(r["updated_at"]) < _epoch(split_at)]
                closed = len(within) < len(records)
                records = within
                # The first request counted the whole window; the slice is smaller now.
                envelope.paging.total = None
                paginator.narrow(split_at)
        if not closed:
            paginator.advance(envelope)  # type: ignore[arg-type]
        done = closed or paginator.finished
        self.stream.conformer.conform(records)
        if done:
            bookmark = rfc3339(paginator.current_value.updated_until)
        else:
            bookmark = records[-1]["updated_at"] if records else None
        with self._scheduler.condition:
            if bookmark is not None:
                part.pages.append(Page(records, bookmark, closes_slice=done))
            part.done = done
            self.slices.extend(new_slices)
            self._split_pending = False

    def _split(self, first: _Slice, envelope: Envelope) -> list[_Slice]:
        """Cut the rest of the window into slices sized by the first page's `paging.total`."""
        cursor = first.paginator.current_value
        start = _epoch(cursor.updated_since or envelope.data[0]["updated_at"])
        end = _epoch(cursor.updated_until)
        page_size = self.stream.page_size
        total = envelope.paging.total
        wanted = math.ceil(total / (2 * page_size)) if total else self._scheduler.workers
        count = max(1, min(wanted, self._scheduler.workers, end - start))
        edges = sorted({start + (end - start) * i // count for i in range(1, count)} - {start})
        edges.append(end)
        return [
            _Slice(KeysetPaginator(_instant(since), _instant(until), page_size))
            for since, until in itertools.pairwise(edges)
        ]


class PageScheduler:
    """A bounded pool of workers fetching pages for the readers opened on it."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.condition = threading.Condition()
        self.current: StreamReader | None = None
        self._readers: list[StreamReader] = []
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"tap-analytics-fetch-{n}", daemon=True)
            for n in range(self.workers)
        ]

    def __enter__(self) -> PageScheduler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with self.condition:
            self._closed = True
            self.condition.notify_all()

    def open(self, stream: AnalyticsStream) -> StreamReader:
        """Start fetching a stream's pages; the reader hands them over in order."""
        reader = StreamReader(self, stream)
        with self.condition:
            self._readers.append(reader)
            self.condition.notify_all()
        return reader

    def _next_task(self) -> tuple[StreamReader, _Slice] | None:
        """The most urgent fetchable slice: the stream being written first, then in order.

        Streams not being written yet may hold at most twice as many pages between them, so
        that they cannot take the memory (or the workers) the current stream needs.
        """
        ahead = sum(
            len(part.pages)
            for reader in self._readers
            if reader is not self.current
            for part in reader.slices
        )
        for reader in self._readers:
            is_current = reader is self.current
            if not is_current and ahead >= 2 * self.workers:
                continue
            for part in reader.slices:
                if part.fetchable:
                    return reader, part
        return None

    def _work(self) -> None:
        while True:
            with self.condition:
                while not self._closed and (task := self._next_task()) is None:
                    self.condition.wait()
                if self._closed:
                    return
                reader, part = task
                part.in_flight = True
            try:
                reader.fetch(part)
            except BaseException as exc:
                with self.condition:
                    part.error = exc
            finally:
                with self.condition:
                    part.in_flight = False
                    self.condition.notify_all()
