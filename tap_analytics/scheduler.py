"""Fetching the pages of every selected stream concurrently, handing them over in order.

The SDK syncs one stream after another with one request in flight. Here a pool of worker
threads fetches pages for all selected streams at once, and a large stream's window is cut
into time slices walked side by side: first where the first page suggests the records lie,
then, whenever a worker has nothing to do, by halving the slice with the most records left.
The tap still emits one stream at a time, slice after slice, page after page, so every RECORD
comes out in `updated_at` order and every STATE claims only what has been written. Buffers
are bounded, so memory does not grow with the data.
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

#: Pages, per worker, that may wait for the writer: in the stream being written, and in all
#: the others together. This bounds memory whatever the size of the data.
CURRENT_PAGES_PER_WORKER = 2
AHEAD_PAGES_PER_WORKER = 2


@dataclass
class Page:
    """Records ready to write, and the bookmark that is safe once they are written."""

    records: list[dict[str, t.Any]]
    bookmark: str
    closes_slice: bool


def _epoch(timestamp: str) -> int:
    return int(datetime.fromisoformat(rfc3339(timestamp)).timestamp())


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
        #: From the last page: records left after it (per `paging.total`), and how many
        #: seconds of `updated_at` a record covers; what a split needs to pick its point.
        self.remaining: int | None = None
        self.seconds_per_record: float | None = None

    def learn(self, page: Envelope) -> None:
        """Note what a page says about the rest of the slice."""
        cursor, records = self.paginator.current_value, page.data
        total = page.paging.total
        self.remaining = None if total is None else total - cursor.offset - len(records)
        if len(records) > 1:
            span = _epoch(records[-1]["updated_at"]) - _epoch(records[0]["updated_at"])
            self.seconds_per_record = span / (len(records) - 1)

    def split(self, page_size: int) -> _Slice | None:
        """Hand the later half of what is left to a new slice, if it is worth a worker."""
        cursor = self.paginator.current_value
        if (
            self.in_flight
            or self.done
            or self.error
            or self.remaining is None
            or self.remaining < 4 * page_size
            or self.seconds_per_record is None
            or cursor.updated_since is None
        ):
            return None
        since, until = _epoch(cursor.updated_since), _epoch(cursor.updated_until)
        middle = since + int(self.seconds_per_record * self.remaining / 2)
        middle = min(max(middle, since + 1), until - 1)
        if middle <= since:
            return None
        # Records read so far are at or before `since`, so none of them is past the split.
        self.paginator.narrow(_instant(middle))
        self.remaining = None
        return _Slice(KeysetPaginator(_instant(middle), cursor.updated_until, page_size))

    @property
    def fetchable(self) -> bool:
        return not (self.in_flight or self.done or self.error)


class StreamReader:
    """One stream's window, split into slices as its pages show where the records lie."""

    def __init__(self, scheduler: PageScheduler, stream: AnalyticsStream) -> None:
        self.stream = stream
        self._scheduler = scheduler
        self.slices = [_Slice(stream.get_new_paginator())]
        #: The slice the writer is waiting on or reading from.
        self.position = 0
        self._split_pending = True

    def pages(self) -> Iterator[Page]:
        """Pages in order; raises the error of a slice that failed when its turn comes."""
        condition = self._scheduler.condition
        with condition:
            self._scheduler.current = self
            condition.notify_all()
        while True:
            with condition:
                while True:
                    current = self.slices[self.position]
                    if current.pages:
                        page = current.pages.popleft()
                        condition.notify_all()
                        break
                    if current.error is not None:
                        raise current.error
                    if self._scheduler.failure is not None:
                        raise self._scheduler.failure
                    if current.done:
                        self.position += 1
                        if self.position == len(self.slices):
                            return
                        continue
                    condition.wait()
            yield page

    def fetch(self, part: _Slice) -> None:
        """Fetch a slice's next page (in a worker thread, outside the scheduler's lock)."""
        paginator = part.paginator
        envelope = self.stream.fetch_page(paginator.current_value)
        records = paginator.unread(envelope)
        part.learn(envelope)
        closed = False
        new_slices: list[_Slice] = []
        if self._split_pending:
            self.stream.stats.expected_records = envelope.paging.total
            if paginator.has_more(envelope):
                new_slices = self._split(part, envelope)
        if new_slices:
            split_at = new_slices[0].paginator.current_value.updated_since or ""
            within = [r for r in records if _epoch(r["updated_at"]) < _epoch(split_at)]
            closed = len(within) < len(records)
            records = within
            # The first request counted the whole window; the slice is smaller now.
            envelope.paging.total = part.remaining = None
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

    def split_largest(self) -> _Slice | None:
        """Split the slice with the most records left, placing the new one right after it."""
        page_size = self.stream.page_size
        for index in sorted(
            range(len(self.slices)), key=lambda i: -(self.slices[i].remaining or 0)
        ):
            if (new := self.slices[index].split(page_size)) is not None:
                self.slices.insert(index + 1, new)
                return new
        return None

    def _split(self, first: _Slice, envelope: Envelope) -> list[_Slice]:
        """Cut the window after the first page into slices, where its records likely lie.

        The first page tells how many records the window holds (`paging.total`) and how
        densely the first of them sit in time; the slices share the span that density
        suggests, and the last one runs on to the window's end whatever the data does.
        """
        cursor = first.paginator.current_value
        start = _epoch(cursor.updated_since or envelope.data[0]["updated_at"])
        end = _epoch(cursor.updated_until)
        page_size = self.stream.page_size
        total = envelope.paging.total
        wanted = math.ceil(total / (2 * page_size)) if total else self._scheduler.workers
        count = max(1, min(wanted, self._scheduler.workers, end - start))
        span = end - start
        if total and first.seconds_per_record is not None:
            span = min(span, max(count, int(first.seconds_per_record * total * 1.1)))
        edges = sorted({start + span * i // count for i in range(1, count)} - {start})
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
        #: An error of the scheduler itself, raised to the writer.
        self.failure: BaseException | None = None
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
        """The most urgent work: the stream being written first, then the others in order.

        Within a stream, the earliest slice ready for its next page comes first; failing
        that, the slice with the most records left is split so that the idle worker can share
        it. Buffered pages are capped per worker, for the stream being written and for all
        the others together, so that streams read ahead cannot take the memory or the
        workers the current one needs.
        """
        buffered = {
            id(reader): sum(len(p.pages) for p in reader.slices) for reader in self._readers
        }
        ahead = sum(buffered.values()) - buffered.get(id(self.current), 0)
        for reader in self._readers:
            if reader is self.current:
                # The slice the writer waits on is always fetched, or nothing could move.
                waited_on = reader.slices[min(reader.position, len(reader.slices) - 1)]
                if waited_on.fetchable and not waited_on.pages:
                    return reader, waited_on
                if buffered[id(reader)] >= CURRENT_PAGES_PER_WORKER * self.workers:
                    continue
            elif ahead >= AHEAD_PAGES_PER_WORKER * self.workers:
                continue
            for part in reader.slices:
                if part.fetchable:
                    return reader, part
            if (new := reader.split_largest()) is not None:
                return reader, new
        return None

    def _work(self) -> None:
        while True:
            with self.condition:
                try:
                    while not self._closed and (task := self._next_task()) is None:
                        self.condition.wait()
                except BaseException as exc:
                    # A bug here must fail the run, not leave the writer waiting forever.
                    self.failure = exc
                    self.condition.notify_all()
                    raise
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
