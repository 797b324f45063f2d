"""Fetching the pages of every selected stream concurrently, handing them over in order.

The SDK syncs one stream after another with one request in flight. Here a pool of worker
threads fetches pages for all selected streams at once. A stream's first page tells how many
records its window holds; the rest of its pages are then fetched side by side, at offsets that
overlap by one record so that the writer can check that they join up (`OverlapChain`), with a
keyset walk where they do not. Offsets, unlike time slices, split the work evenly however the
records are spread in time. The tap still emits one stream at a time, page after page, so
every RECORD comes out in `updated_at` order and every STATE claims only what has been written.
Buffers are bounded, so memory does not grow with the data.
"""

from __future__ import annotations

import threading
import time
import typing as t
from dataclasses import dataclass

from tap_analytics.pagination import Envelope, OverlapChain, Window, WindowCursor
from tap_analytics.timestamps import epoch, rfc3339

if t.TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

#: Pages, per worker, that may wait for the writer: in the stream being written, and in all
#: the others together. This bounds memory whatever the size of the data.
CURRENT_PAGES_PER_WORKER = 2
AHEAD_PAGES_PER_WORKER = 2
#: How long closing waits for requests in flight. A process that exits while a worker is inside
#: OpenSSL (a handshake, loading CA certificates) crashes in OpenSSL's exit cleanup (SIGSEGV);
#: a handshake takes milliseconds, and a worker sleeping in backoff is left behind.
CLOSE_WAIT_SECONDS = 2.0


class PageSource(t.Protocol):
    """What the scheduler needs of a stream: its window's start, its pages, its schema."""

    @property
    def page_size(self) -> int:
        """Records per request (at least 2)."""

    def window_start(self) -> str | None:
        """Where this run's window starts (inclusive), if anywhere."""

    def first_page(self, updated_since: str | None) -> tuple[Envelope, str]:
        """The window's first page asked without an upper end, and where the window ends."""

    def fetch_page(self, cursor: WindowCursor) -> Envelope:
        """One page; safe to call from worker threads."""

    def conform(self, records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
        """A page of records conformed to the schema."""

    def expect_records(self, total: int | None) -> None:
        """The API's count of records in the window, when its first page tells it."""


@dataclass
class Page:
    """Records ready to write, and the bookmark that is safe once they are written."""

    records: list[dict[str, t.Any]]
    bookmark: str


class StreamReader:
    """One stream's window: its pages fetched ahead by the workers, joined by the writer."""

    def __init__(self, scheduler: PageScheduler, stream: PageSource, window: Window | None) -> None:
        self.stream = stream
        self._scheduler = scheduler
        if window is None:
            #: The stream's own window ends at the API's time when its first page is read.
            self.chain = OverlapChain(stream.window_start(), None, page_size=stream.page_size)
        else:
            self.chain = OverlapChain(
                window.updated_since, window.updated_until, stream.page_size, window.accounts
            )
        #: Pages fetched and not yet joined, by index; pages are requested in index order.
        self.fetched: dict[int, Envelope] = {}
        self.next_index = 0
        #: The page the writer waits on or reads from.
        self.position = 0
        #: Pages the first page's `paging.total` calls for; the highest index seen full; the
        #: lowest seen to end the window. Without a total, pages are fetched a few ahead of
        #: the last full one.
        self.planned = 1
        self.highest_full = -1
        self.lowest_end: int | None = None
        #: A walk's request the writer waits on, and its answer (or error).
        self.walk_request: WindowCursor | None = None
        self.walk_answer: Envelope | BaseException | None = None
        self.failure: tuple[int, BaseException] | None = None
        self.closed = False

    def wants(self, index: int) -> bool:
        """Whether page `index` should be fetched now."""
        if self.lowest_end is not None and index > self.lowest_end:
            return False
        # Past the plan (no total, or one that grew stale), a few pages ahead of the last full.
        lookahead = self._scheduler.workers
        return index < self.planned or (
            self.highest_full >= self.planned - 1 and index <= self.highest_full + lookahead
        )

    def pages(self) -> Iterator[Page]:
        """Pages in order, then an empty one bookmarking the window's end.

        Raises the error of a request this stream needed.
        """
        condition = self._scheduler.condition
        with condition:
            self._scheduler.current = self
            condition.notify_all()
        try:
            for records in self.chain.read(self._page_at, self._walk):
                assert self.chain.last is not None
                bookmark = rfc3339(self.chain.last[0])
                yield Page(self.stream.conform(records), bookmark)
        finally:
            with condition:
                self.closed = True
                self.fetched.clear()
                condition.notify_all()
        yield Page([], rfc3339(self.chain.updated_until))

    def _page_at(self, index: int) -> Envelope:
        """Page `index`, once a worker has fetched it."""
        condition = self._scheduler.condition
        with condition:
            self.position = index
            condition.notify_all()
            while index not in self.fetched:
                if self.failure is not None and self.failure[0] <= index:
                    raise self.failure[1]
                if self._scheduler.failure is not None:
                    raise self._scheduler.failure
                condition.wait()
            condition.notify_all()
            return self.fetched.pop(index)

    def _walk(self, cursor: WindowCursor) -> Envelope:
        """A walk's page, fetched by a worker ahead of everything else."""
        condition = self._scheduler.condition
        with condition:
            self.walk_request, self.walk_answer = cursor, None
            condition.notify_all()
            while self.walk_answer is None:
                if self._scheduler.failure is not None:
                    raise self._scheduler.failure
                condition.wait()
            answer, self.walk_answer = self.walk_answer, None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def fetch(self, task: int | WindowCursor) -> None:
        """Fetch a page or a walk's page (in a worker thread, outside the scheduler's lock)."""
        if isinstance(task, WindowCursor):
            try:
                answer: Envelope | BaseException = self.stream.fetch_page(task)
            except BaseException as exc:
                answer = exc
            with self._scheduler.condition:
                self.walk_answer = answer
            return
        try:
            if task == 0 and self.chain.updated_until is None:
                envelope, until = self.stream.first_page(self.chain.updated_since)
            else:
                envelope, until = self.stream.fetch_page(self.chain.cursor(task)), None
        except BaseException as exc:
            with self._scheduler.condition:
                if self.failure is None or task < self.failure[0]:
                    self.failure = (task, exc)
            return
        with self._scheduler.condition:
            if until is None:
                self._store(task, envelope)
            else:
                self.chain.updated_until = until
                self._take_first_page(envelope)

    def _take_first_page(self, page: Envelope) -> None:
        """Take a first page asked before the window's end was known, if it can stand in.

        It was read when no record was stamped later than the window's end, so it is the
        window's first page then, unless it holds records at or past that end. A record
        changed after it was read may be missing from it, but such a record sorts last in the
        window, where later pages (asked once the window's end is known) find it. So the page
        stands in only if it does not end the window; otherwise page 0 is asked again.
        """
        until = self.chain.updated_until
        assert until is not None
        if self.chain.ends_window(0, page) or epoch(page.data[-1]["updated_at"]) >= epoch(until):
            self.next_index = 0
        else:
            self._store(0, page)

    def _store(self, index: int, page: Envelope) -> None:
        """Note what a fetched page says about the others and keep it for the writer."""
        if index == 0:
            self.planned = self.chain.pages_for(page.paging.total)
            self.stream.expect_records(page.paging.total)
        if self.chain.ends_window(index, page):
            self.lowest_end = index if self.lowest_end is None else min(self.lowest_end, index)
        else:
            self.highest_full = max(self.highest_full, index)
        if not self.closed:
            self.fetched[index] = page

    def next_task(self, buffer_cap: int | None) -> int | WindowCursor | None:
        """This stream's most urgent request, if any.

        A walk's first, then the page the writer waits on, then the next page wanted unless
        `buffer_cap` pages already wait.
        """
        if self.walk_request is not None:
            task, self.walk_request = self.walk_request, None
            return task
        if self.closed or self.failure is not None:
            return None
        waited_on = self.position == self.next_index
        if not waited_on and (
            not self.wants(self.next_index)
            or (buffer_cap is not None and len(self.fetched) >= buffer_cap)
        ):
            return None
        self.next_index += 1
        return self.next_index - 1


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
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        for thread in self._threads:
            if thread.ident is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def open(self, stream: PageSource, window: Window | None = None) -> StreamReader:
        """Start fetching a stream's pages; the reader hands them over in order.

        Without `window`, the stream's own window: from its start to the API's clock.
        """
        reader = StreamReader(self, stream, window)
        with self.condition:
            self._readers.append(reader)
            self.condition.notify_all()
        return reader

    def _next_task(self) -> tuple[StreamReader, int | WindowCursor] | None:
        """The most urgent work: the stream being written first, then the others in order.

        Buffered pages are capped per worker, for the stream being written and for all the
        others together, so that streams read ahead cannot take the memory or the workers the
        current one needs.
        """
        ahead = sum(len(r.fetched) for r in self._readers if r is not self.current)
        for reader in self._readers:
            if reader is self.current:
                task = reader.next_task(CURRENT_PAGES_PER_WORKER * self.workers)
            elif ahead < AHEAD_PAGES_PER_WORKER * self.workers:
                task = reader.next_task(None)
            else:
                continue
            if task is not None:
                return reader, task
        return None

    def _work(self) -> None:
        while True:
            with self.condition:
                task = None
                try:
                    while not self._closed and (task := self._next_task()) is None:
                        self.condition.wait()
                except BaseException as exc:
                    # A bug here must fail the run, not leave the writer waiting forever.
                    self.failure = exc
                    self.condition.notify_all()
                    raise
                if task is None:
                    return
            reader, request = task
            try:
                reader.fetch(request)
            finally:
                with self.condition:
                    self.condition.notify_all()
