"""Which worker the page scheduler wakes, and when: none that would find nothing to send.

Against a fast API every needless wake-up is a thread switch and a pass over the scheduler's
state under the interpreter lock the writer needs; the fast-server benchmark (scenario C)
measures what they cost. These tests pin the decisions without threads.
"""

from __future__ import annotations

import threading
import time
import typing as t

from tap_analytics.pagination import Envelope
from tap_analytics.scheduler import PageScheduler, _Copy, _Flight

if t.TYPE_CHECKING:
    from tap_analytics.pagination import WindowCursor


class NoPages:
    """A stream the test never fetches from: the scheduler only needs its shape."""

    page_size = 100

    def window_start(self) -> str | None:
        return None

    def fetch_page_and_clock(self, cursor: WindowCursor) -> tuple[Envelope, str]:
        raise AssertionError("no request is sent without workers")

    def fetch_page(self, cursor: WindowCursor) -> Envelope:
        raise AssertionError("no request is sent without workers")

    def conform(self, records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
        return records

    def expect_records(self, total: int | None) -> None:
        pass


class CountedCondition(threading.Condition):
    notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += n
        super().notify(n)


def scheduler_with_copies_sent(*sent_ago: float) -> tuple[PageScheduler, CountedCondition]:
    """A scheduler of 2 workers (not started), with a copy in flight for each of `sent_ago`."""
    scheduler = PageScheduler(2)
    reader = scheduler.open(NoPages())
    work = scheduler.work = CountedCondition(scheduler.lock)
    now = time.monotonic()
    for task, ago in enumerate(sent_ago):
        flight = reader.flights[task] = _Flight()
        copy = _Copy(reader, task, flight, primary=True)
        copy.mark(now - ago)
        scheduler._active.add(copy)
    return scheduler, work


def test_a_page_taken_wakes_no_worker_while_every_place_in_flight_is_taken() -> None:
    scheduler, work = scheduler_with_copies_sent(0.0, 0.0)
    assert scheduler.in_flight.limit == 2
    with scheduler.lock:
        scheduler.page_taken()
    assert work.notified == 0


def test_a_page_taken_wakes_a_worker_when_a_place_is_free_or_held_by_a_late_request() -> None:
    for sent_ago in [(0.0,), (0.0, 60.0)]:  # one place free; one held by a stalled request
        scheduler, work = scheduler_with_copies_sent(*sent_ago)
        with scheduler.lock:
            scheduler.page_taken()
        assert work.notified == 1, sent_ago


def test_a_worker_whose_request_ends_wakes_no_other_it_looks_for_work_itself() -> None:
    scheduler, work = scheduler_with_copies_sent(0.0, 0.0)
    copy = next(iter(scheduler._active))
    scheduler._finished(copy)
    assert copy not in scheduler._active
    assert work.notified == 0


def test_without_a_total_each_full_page_wakes_a_worker_for_each_page_it_lets_go() -> None:
    scheduler, work = scheduler_with_copies_sent()
    reader = scheduler._readers[0]
    reader.planned, reader.highest_full = 1, 0  # page 0 said no total: pages go a few ahead
    full = Envelope(data=[{"id": str(n)} for n in range(NoPages.page_size)])
    with scheduler.lock:
        reader._store(3, full)
        assert work.notified == 3
        reader._store(2, full)  # behind the highest full page: it lets none go
        assert work.notified == 3
