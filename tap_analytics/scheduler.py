"""Fetching the pages of every selected stream concurrently, handing them over in order.

The SDK syncs one stream after another with one request in flight. Here a pool of worker
threads fetches pages for all selected streams at once. A stream's first page tells how many
records its window holds; the rest of its pages are then fetched side by side, at offsets that
overlap by one record so that the writer can check that they join up (`OverlapChain`), with a
keyset walk where they do not. Offsets, unlike time slices, split the work evenly however the
records are spread in time. The tap still emits one stream at a time, page after page, so
every RECORD comes out in `updated_at` order and every STATE claims only what has been written.

A page that is slow (a stalled response, a retry backing off) must not stop the line:

* **Hedging.** Once a request has been out far longer than the run's observed latency
  (`HEDGE_LATENCY_FACTOR` x its 90th percentile, at least `HEDGE_MIN_SECONDS`), an idle worker
  sends the same request again; the first answer is used and the other dropped. Time spent
  waiting for the rate limiter does not count, and the copy waits for the limiter like any
  request, so hedges spend only budget the limiter grants. At most two copies per request (the
  second once the first is as late: a copy may stall too), and at most `workers // 4` (at
  least one) copies at once that are still needed.
* **Lookahead while blocked.** While the page the writer waits on is late (out for more than
  twice the observed latency), every worker may buffer `BLOCKED_PAGES_PER_WORKER` more pages,
  so that the others keep flowing until it arrives.
* **Late requests give up their place.** A request backing off or stalled no longer counts
  as in flight, and a spare thread (`THREADS_PER_WORKER`) sends the next one meanwhile: a
  worker's thread sleeping through a retry's backoff cost a fault a worker's share of the run.
* **Fewer in flight when the CPU is the limit** (`concurrency.py`). Against an API faster
  than the tap, more workers would only compete with the writer for the interpreter lock; a
  late request does not hold a place.

Memory stays bounded whatever the size of the data: at most
(`CURRENT_PAGES_PER_WORKER` + `AHEAD_PAGES_PER_WORKER` + 2 x `BLOCKED_PAGES_PER_WORKER`) x
workers pages wait for the writer (64 pages of 100 records with the default 8 workers), plus
one page per thread in flight (`THREADS_PER_WORKER` x workers).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import typing as t
from collections import deque
from dataclasses import dataclass

from tap_analytics.concurrency import InFlightLimit
from tap_analytics.pagination import Envelope, OverlapChain, Window, WindowCursor
from tap_analytics.timestamps import rfc3339

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    R = t.TypeVar("R")

#: Pages, per worker, that may wait for the writer: in the stream being written, in all the
#: others together, and more in each while the page the writer waits on is late.
CURRENT_PAGES_PER_WORKER = 2
AHEAD_PAGES_PER_WORKER = 2
BLOCKED_PAGES_PER_WORKER = 2
#: Threads per worker: a thread whose request is late (a retry backing off, a stall) keeps it
#: until it ends, and no longer counts as in flight, so the others take its place.
THREADS_PER_WORKER = 2
#: A request out longer than this many times the 90th percentile of the run's latency (and at
#: least HEDGE_MIN_SECONDS) is sent again; before LATENCY_SAMPLES_NEEDED answers, after
#: HEDGE_DEFAULT_SECONDS.
HEDGE_LATENCY_FACTOR = 4.0
HEDGE_MIN_SECONDS = 0.15
HEDGE_DEFAULT_SECONDS = 1.0
#: ... and while requests wait for the rate limiter, not before this many seconds.
HEDGE_RATE_BOUND_SECONDS = 3.0
LATENCY_SAMPLES_NEEDED = 8
#: Answers the latency percentiles are taken over (the most recent).
LATENCY_WINDOW = 128
#: The page the writer waits on is late once out this many times the 90th percentile (and
#: at least BLOCKED_MIN_SECONDS): the lookahead grows.
BLOCKED_LATENCY_FACTOR = 2.0
BLOCKED_MIN_SECONDS = 0.1
#: How long closing waits for requests in flight. A process that exits while a worker is inside
#: OpenSSL (a handshake, loading CA certificates) crashes in OpenSSL's exit cleanup (SIGSEGV);
#: a handshake takes milliseconds, and a worker sleeping in backoff is left behind.
CLOSE_WAIT_SECONDS = 2.0

_logger = logging.getLogger("tap-analytics")
#: The copy of a request the current worker thread is sending (see request_queued/_sent).
_local = threading.local()

Task: t.TypeAlias = "int | WindowCursor"


class Superseded(BaseException):
    """The other copy of this request answered: its next attempt is not sent.

    A BaseException, so that no retry loop catches it.
    """


def request_queued() -> None:
    """The current worker's request waits for the rate limiter: that is not latency.

    The stream calls it before asking the limiter for each attempt (and after a 429, while
    Retry-After holds), and request_sent once allowed; outside a scheduler's worker both do
    nothing. Raises Superseded when the other copy of the request has answered.
    """
    copy: _Copy | None = getattr(_local, "copy", None)
    if copy is not None:
        if copy.superseded():
            raise Superseded
        copy.mark(None)
    _mark_call(None)


def request_sent() -> None:
    """The current worker's request goes out now (after the limiter allowed it)."""
    copy: _Copy | None = getattr(_local, "copy", None)
    if copy is not None:
        copy.mark(time.monotonic())
    _mark_call(time.monotonic())


def request_backing_off() -> None:
    """The current worker's request failed and waits to be retried: it is late already.

    So an idle worker sends a copy now rather than once the request's time is far above the
    run's latency; the first answer still wins, and the retry goes on.
    """
    copy: _Copy | None = getattr(_local, "copy", None)
    if copy is not None:
        copy.mark(-math.inf)
        scheduler = copy.reader._scheduler
        with scheduler.lock:
            scheduler.work.notify()
    _mark_call(-math.inf)


#: Calls of one request at most, in `hedged` and in the scheduler: the request and two copies.
HEDGED_CALLS = 3


def on_worker() -> bool:
    """Whether the current thread is a scheduler's worker sending a request (it hedges)."""
    return getattr(_local, "copy", None) is not None


@dataclass
class _Call:
    """One call of `hedged`: when its latest attempt went out (None: it waits for the limiter)."""

    sent_at: float | None


def _mark_call(sent_at: float | None) -> None:
    call: _Call | None = getattr(_local, "call", None)
    if call is not None:
        call.sent_at = sent_at


def hedged(send: Callable[[], R], copy: Callable[[], R], after: float) -> R:
    """`send()`, and `copy()` too each time the latest call has been out `after` seconds.

    Each runs in a thread of its own; the first answer wins, an error only once every call has
    failed. For the requests made outside the scheduler (the accounts listing, before any
    page), where no latency is known yet: a stalled response there would hold up the run.
    Time a call waits for the rate limiter (Retry-After included) does not count: a copy
    would only wait beside it and then spend one more request of the window.
    """
    answers: queue.SimpleQueue[tuple[bool, t.Any]] = queue.SimpleQueue()
    calls: list[_Call] = []

    def run(call: Callable[[], R], state: _Call) -> None:
        _local.call = state
        try:
            answers.put((True, call()))
        except BaseException as exc:  # handed to the caller
            answers.put((False, exc))
        finally:
            _local.call = None

    def start(call: Callable[[], R]) -> None:
        state = _Call(time.monotonic())
        calls.append(state)
        _helpers.submit(lambda: run(call, state))

    start(send)
    failures = 0
    while True:
        latest = calls[-1].sent_at
        if len(calls) >= HEDGED_CALLS:
            timeout = None
        elif latest is None:  # queued at the limiter: look again later
            timeout = after
        else:
            timeout = max(0.0, latest + after - time.monotonic())
        try:
            answered, value = answers.get(timeout=timeout)
        except queue.Empty:
            latest = calls[-1].sent_at
            if latest is not None and time.monotonic() >= latest + after:
                start(copy)
                _logger.info("A request outside the page scheduler is slow: sent again")
            continue
        if answered:
            return t.cast("R", value)
        failures += 1
        if failures == len(calls):
            raise value


class _Helpers:
    """Threads that run `hedged`'s calls, kept for their sessions' keep-alive connections.

    One more starts when none is idle. Daemon threads, as the loser of a hedge may still wait
    on a stalled response when the process exits.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            spawn = not self._idle
            if not spawn:
                self._idle -= 1
        if spawn:
            threading.Thread(target=self._serve, name="tap-analytics-hedge", daemon=True).start()
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            self._jobs.get()()
            with self._lock:
                self._idle += 1


_helpers = _Helpers()


class PageSource(t.Protocol):
    """What the scheduler needs of a stream: its window's start, its pages, its schema."""

    @property
    def page_size(self) -> int:
        """Records per request (at least 2)."""

    def window_start(self) -> str | None:
        """Where this run's window starts (inclusive), if anywhere."""

    def fetch_page_and_clock(self, cursor: WindowCursor) -> tuple[Envelope, str]:
        """One page, and the API's clock when it answered: where a window without end ends."""

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


@dataclass(eq=False)
class _Flight:
    """A request in flight: when its latest attempt went out, and its copies (a hedge)."""

    #: When the first copy's latest attempt went out; None while it waits for the limiter.
    sent_at: float | None = None
    copies: int = 1
    #: Copies sent so far, and when the latest went out.
    hedges: int = 0
    hedged_at: float = 0.0


@dataclass(eq=False)
class _Copy:
    """One worker's copy of a request in flight."""

    reader: StreamReader
    task: Task
    flight: _Flight
    primary: bool
    sent_at: float | None = None

    def superseded(self) -> bool:
        """Whether nobody needs this copy's answer: the other answered, or its stream closed."""
        return self.reader.closed or self.reader.flights.get(self.task) is not self.flight

    def dropped(self, now: float) -> bool:
        """Whether nobody needs this copy's answer and it went out a while ago."""
        sent_at = self.sent_at
        return self.superseded() and sent_at is not None and now - sent_at >= HEDGE_MIN_SECONDS

    def mark(self, sent_at: float | None) -> None:
        """An attempt went out at `sent_at` (None: it waits for the rate limiter)."""
        self.sent_at = sent_at
        if self.primary:
            self.flight.sent_at = sent_at


class StreamReader:
    """One stream's window: its pages fetched ahead by the workers, joined by the writer."""

    def __init__(self, scheduler: PageScheduler, stream: PageSource, window: Window | None) -> None:
        self.stream = stream
        self._scheduler = scheduler
        window = window or Window(stream.window_start(), None, None)
        #: A window without an end ends at the API's clock when its first page is read.
        self.chain = OverlapChain(
            window.updated_since, window.updated_until, stream.page_size, window.accounts
        )
        #: Pages fetched and not yet joined, by index; pages are requested in index order.
        self.fetched: dict[int, Envelope] = {}
        #: Requests in flight: page indexes and walk cursors.
        self.flights: dict[Task, _Flight] = {}
        self.next_index = 0
        #: The page the writer waits on or reads from, and whether it waits on it now.
        self.position = 0
        self.waiting = False
        #: Pages the first page's `paging.total` calls for; the highest index seen full; the
        #: lowest seen to end the window. Without a total, pages are fetched a few ahead of
        #: the last full one.
        self.planned = 1
        self.highest_full = -1
        self.lowest_end: int | None = None
        #: A walk's request to send, the one the writer waits on, and its answer (or error).
        self.walk_request: WindowCursor | None = None
        self.walk_pending: WindowCursor | None = None
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
        scheduler = self._scheduler
        with scheduler.lock:
            scheduler.current = self
            scheduler.work.notify_all()
        try:
            for records in self.chain.read(self._page_at, self._walk):
                assert self.chain.last is not None
                bookmark = rfc3339(self.chain.last[0])
                yield Page(self.stream.conform(records), bookmark)
        finally:
            with scheduler.lock:
                self.closed = True
                self.fetched.clear()
                scheduler.forget(self)
                scheduler.work.notify_all()
        yield Page([], rfc3339(self.chain.updated_until))

    def _page_at(self, index: int) -> Envelope:
        """Page `index`, once a worker has fetched it."""
        scheduler = self._scheduler
        with scheduler.lock:
            if index != self.position:
                self.position = index
                if index not in self.fetched and index not in self.flights:
                    scheduler.work.notify()  # the page waited on goes before any cap
            while index not in self.fetched:
                if self.failure is not None and self.failure[0] <= index:
                    raise self.failure[1]
                if scheduler.failure is not None:
                    raise scheduler.failure
                self.waiting = True
                scheduler.ready.wait()
                self.waiting = False
            scheduler.page_taken()
            return self.fetched.pop(index)

    def _walk(self, cursor: WindowCursor) -> Envelope:
        """A walk's page, fetched by a worker ahead of everything else."""
        scheduler = self._scheduler
        with scheduler.lock:
            self.walk_request = self.walk_pending = cursor
            self.walk_answer = None
            scheduler.work.notify()
            while self.walk_answer is None:
                if scheduler.failure is not None:
                    raise scheduler.failure
                self.waiting = True
                scheduler.ready.wait()
                self.waiting = False
            answer, self.walk_answer, self.walk_pending = self.walk_answer, None, None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def head_flight(self) -> _Flight | None:
        """The request the writer waits on, if it waits on one in flight."""
        if not self.waiting:
            return None
        if self.walk_pending is not None:
            return self.flights.get(self.walk_pending)
        return self.flights.get(self.position)

    def fetch(self, task: Task, copy: _Copy) -> None:
        """Fetch a page or a walk's page (in a worker thread, outside the scheduler's lock)."""
        scheduler = self._scheduler
        flight = copy.flight
        until: str | None = None
        try:
            if isinstance(task, WindowCursor):
                envelope = self.stream.fetch_page(task)
            elif task == 0 and self.chain.updated_until is None:
                # Asking for the first page while learning where the window ends saves a round
                # trip; _take_first_page says when that page can stand in for the window's.
                envelope, until = self.stream.fetch_page_and_clock(self.chain.cursor(0))
            else:
                envelope = self.stream.fetch_page(self.chain.cursor(task))
        except BaseException as exc:
            with scheduler.lock:
                flight.copies -= 1
                if self.flights.get(task) is not flight or flight.copies:
                    return  # another copy answered, or may still
                del self.flights[task]
                if isinstance(task, WindowCursor):
                    if task == self.walk_pending and self.walk_answer is None:
                        self.walk_answer = exc
                elif self.failure is None or task < self.failure[0]:
                    self.failure = (task, exc)
                scheduler.ready.notify_all()
            return
        with scheduler.lock:
            flight.copies -= 1
            if copy.sent_at is not None:
                scheduler.observe(time.monotonic() - copy.sent_at)
            if self.flights.get(task) is not flight:
                return  # the other copy answered first
            del self.flights[task]
            if not copy.primary:
                scheduler.hedges_won += 1
            if isinstance(task, WindowCursor):
                if task == self.walk_pending and self.walk_answer is None:
                    self.walk_answer = envelope
                    scheduler.ready.notify_all()
            elif until is not None:
                self.chain.updated_until = until
                self._take_first_page(envelope)
            else:
                self._store(task, envelope)

    def _take_first_page(self, page: Envelope) -> None:
        """Take a first page asked before the window's end was known, if it can stand in.

        (`OverlapChain.first_page_stands_in` says when); otherwise page 0 is asked again.
        """
        if self.chain.first_page_stands_in(page):
            self._store(0, page)
        else:
            self.next_index = 0

    def _store(self, index: int, page: Envelope) -> None:
        """Note what a fetched page says about the others and keep it for the writer."""
        scheduler = self._scheduler
        if index == 0:
            self.planned = self.chain.pages_for(page.paging.total)
            self.stream.expect_records(page.paging.total)
            scheduler.work.notify_all()  # the rest of the window's pages can go
        if self.chain.ends_window(index, page):
            self.lowest_end = index if self.lowest_end is None else min(self.lowest_end, index)
        elif index > self.highest_full:
            opened = index - self.highest_full
            self.highest_full = index
            if index >= self.planned - 1:  # past the plan: full pages let the next ones go
                scheduler.work.notify(opened)
        if not self.closed:
            self.fetched[index] = page
            if index == self.position:
                scheduler.ready.notify_all()

    def next_task(self, buffer_cap: int | None) -> Task | None:
        """This stream's most urgent request, if any, now in flight.

        A walk's first, then the page the writer waits on, then the next page wanted unless
        `buffer_cap` pages already wait.
        """
        if self.walk_request is not None:
            task: Task = self.walk_request
            self.walk_request = None
            self.flights[task] = _Flight()
            return task
        if self.closed or self.failure is not None:
            return None
        waited_on = self.position == self.next_index
        if not waited_on and (
            not self.wants(self.next_index)
            or (buffer_cap is not None and len(self.fetched) >= buffer_cap)
        ):
            return None
        task = self.next_index
        self.next_index += 1
        self.flights[task] = _Flight()
        return task


class PageScheduler:
    """A bounded pool of workers fetching pages for the readers opened on it."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        #: One lock; workers wait on `work`, the writer on `ready`.
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)
        self.ready = threading.Condition(self.lock)
        #: Copies being sent, and the condition closing waits on for them to end.
        self._active: set[_Copy] = set()
        self.idle = threading.Condition(self.lock)
        self.current: StreamReader | None = None
        #: An error of the scheduler itself, raised to the writer.
        self.failure: BaseException | None = None
        #: Hedged requests: copies sent, and copies that answered first.
        self.hedges = 0
        self.hedges_won = 0
        self._max_hedges_out = max(1, self.workers // 4)
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.in_flight = InFlightLimit(self.workers)
        self._hedge_after = HEDGE_DEFAULT_SECONDS
        self._late_after = HEDGE_DEFAULT_SECONDS
        self._readers: list[StreamReader] = []
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"tap-analytics-fetch-{n}", daemon=True)
            for n in range(self.workers * THREADS_PER_WORKER)
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
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        with self.lock:
            self._closed = True
            self.work.notify_all()
            # A copy whose answer nobody needs any more (the other copy answered, or its
            # stream is closed) and that went out a while ago waits on the network, past any
            # handshake: it is not waited for. That is the loser of a hedge on a stalled
            # response, which would otherwise hold the exit for the whole stall.
            while (now := time.monotonic()) < deadline and any(
                not copy.dropped(now) for copy in self._active
            ):
                self.idle.wait(deadline - now)
        if self.hedges:
            _logger.info(
                "Slow requests sent again: %d (the copy answered first %d times); every "
                "page was used once",
                self.hedges,
                self.hedges_won,
            )

    def open(self, stream: PageSource, window: Window | None = None) -> StreamReader:
        """Start fetching a stream's pages; the reader hands them over in order.

        Without `window`, the stream's own window: from its start to the API's clock.
        """
        reader = StreamReader(self, stream, window)
        with self.lock:
            self._readers.append(reader)
            self.work.notify_all()
        return reader

    def forget(self, reader: StreamReader) -> None:
        """A closed reader gets no more work (its copies still in flight are dropped)."""
        if reader in self._readers:
            self._readers.remove(reader)

    def observe(self, latency: float) -> None:
        """An answer took `latency` seconds: update when a request counts as late."""
        samples = self._latencies
        samples.append(latency)
        if len(samples) >= LATENCY_SAMPLES_NEEDED:
            ordered = sorted(samples)
            p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
            self._hedge_after = max(HEDGE_MIN_SECONDS, HEDGE_LATENCY_FACTOR * p90)
            self._late_after = max(BLOCKED_MIN_SECONDS, BLOCKED_LATENCY_FACTOR * p90)

    def page_taken(self) -> None:
        """The writer took a page (holding the lock): a slot in the buffers is free.

        A worker is woken for it only if a place in flight is free as well. While every place
        is taken a woken worker finds nothing to send, and the worker whose request ends next
        looks for work itself. Against the fast sandbox those wake-ups were about half the
        process's thread switches and cost 6-10 % of its CPU.
        """
        self.in_flight.page_written()
        if self._sending(time.monotonic())[0] < self.in_flight.limit:
            self.work.notify()

    def _sending(self, now: float) -> tuple[int, float]:
        """Requests in flight that are not late, and when the next of them turns late.

        A late request (a stall, a retry backing off) does not hold a place: the others go on.
        """
        sending, late_at = 0, math.inf
        for copy in self._active:
            if copy.sent_at is None or now < copy.sent_at + self._late_after:
                sending += 1
                if copy.sent_at is not None:
                    late_at = min(late_at, copy.sent_at + self._late_after)
        return sending, late_at

    def _next_task(self, now: float) -> tuple[StreamReader, Task, _Copy] | float | None:
        """The most urgent work, or when to look again (None: when something changes).

        A hedge of a late request first; then the stream being written; then the others in
        order. Buffered pages are capped per worker, for the stream being written and for all
        the others together, so that streams read ahead cannot take the memory or the workers
        the current one needs; while the page the writer waits on is late, the caps grow.
        """
        hedge, wake_at = self._hedge(now)
        if hedge is not None:
            return hedge
        sending, late_at = self._sending(now)
        if sending >= self.in_flight.limit:  # concurrency.py: fewer when bound by the CPU
            wake_at = min(wake_at, late_at)
            return None if math.isinf(wake_at) else wake_at
        current = self.current
        extra = 0
        head = current.head_flight() if current is not None else None
        if head is not None and head.sent_at is not None:
            late_at = head.sent_at + self._late_after
            if now >= late_at:
                extra = BLOCKED_PAGES_PER_WORKER * self.workers
            else:
                wake_at = min(wake_at, late_at)
        ahead = sum(len(r.fetched) for r in self._readers if r is not current)
        for reader in self._readers:
            if reader is current:
                task = reader.next_task(CURRENT_PAGES_PER_WORKER * self.workers + extra)
            elif ahead < AHEAD_PAGES_PER_WORKER * self.workers + extra:
                task = reader.next_task(None)
            else:
                continue
            if task is not None:
                return reader, task, _Copy(reader, task, reader.flights[task], primary=True)
        return None if math.isinf(wake_at) else wake_at

    def _wait_for_work(self) -> tuple[StreamReader, Task, _Copy] | None:
        """The next work for this worker (holding the lock), or None once closed."""
        while not self._closed:
            now = time.monotonic()
            found = self._next_task(now)
            if isinstance(found, tuple):
                self._active.add(found[2])
                return found
            self.work.wait(None if found is None else max(found - now, 0.005))
        return None

    def _hedge(self, now: float) -> tuple[tuple[StreamReader, Task, _Copy] | None, float]:
        """A copy of a late request to send, if one is due; else when the next one is."""
        wake_at = math.inf
        # A copy nobody needs any more (its request answered) does not count, however long
        # it stalls.
        copies_out = sum(1 for c in self._active if not c.primary and not c.superseded())
        if copies_out >= self._max_hedges_out:
            return None, wake_at
        after = self._hedge_after
        readers = self._readers
        if any(f.sent_at is None for r in readers for f in r.flights.values()):
            # Requests wait for the rate limit: a copy would take a place in its budget from
            # a page, so only one far later than usual is worth it.
            after = max(after, HEDGE_RATE_BOUND_SECONDS)
        if self.current in readers:  # its requests hold up the writer soonest
            readers = [self.current, *(r for r in readers if r is not self.current)]
        for reader in readers:
            for task, flight in reader.flights.items():
                if flight.hedges >= HEDGED_CALLS - 1:
                    continue
                if flight.sent_at is None:
                    # Queued at the rate limiter: nothing tells the workers when it goes out,
                    # so they look again within `after` rather than sleep until other news.
                    wake_at = min(wake_at, now + after)
                    continue
                # A copy may stall too (the fault is the server's, not the request's): one
                # more goes once the latest copy is as late.
                due = max(flight.sent_at, flight.hedged_at) + after
                if now < due:
                    wake_at = min(wake_at, due)
                    continue
                flight.hedges += 1
                flight.hedged_at = now
                flight.copies += 1
                self.hedges += 1
                return (reader, task, _Copy(reader, task, flight, primary=False)), wake_at
        return None, wake_at

    def _work(self) -> None:
        try:
            while (work := self._take_work()) is not None:
                reader, task, copy = work
                _local.copy = copy
                try:
                    reader.fetch(task, copy)
                finally:
                    _local.copy = None
                    self._finished(copy)
        except BaseException as exc:
            # A bug here must fail the run, not leave the writer waiting forever.
            with self.lock:
                self.failure = exc
                self.ready.notify_all()
            raise

    def _take_work(self) -> tuple[StreamReader, Task, _Copy] | None:
        with self.lock:
            return self._wait_for_work()

    def _finished(self, copy: _Copy) -> None:
        """A copy's request has ended and its place in flight is free.

        No other worker is woken for the place: this one looks for work next itself, and the
        state it sees is the state another would see. Waking one would only hand the lock and
        the interpreter over, a thread switch per request (`page_taken` says what it costs).
        """
        with self.lock:
            self._active.discard(copy)
            if self._closed:
                self.idle.notify_all()
