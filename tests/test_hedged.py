"""`hedged`, which copies a slow request made outside the page scheduler (the accounts listing).

A unit test of the rule alone; the slow requests of real runs are in test_failures.py.
"""

from __future__ import annotations

import threading

from tap_analytics.scheduler import hedged, request_queued, request_sent

#: Seconds after which a request that is out counts as slow here: far below the waits below.
AFTER = 0.01


def test_a_request_waiting_for_the_rate_limiter_is_not_copied() -> None:
    copies: list[str] = []
    released = threading.Event()

    def send() -> str:
        request_queued()  # held back, as by a 429's Retry-After
        released.wait(timeout=0.5)
        request_sent()
        return "the request"

    def copy() -> str:
        copies.append("copy")
        released.set()
        return "a copy"

    # A copy would wait beside it for the same window and then spend one more request of it.
    assert hedged(send, copy, AFTER) == "the request"
    assert copies == []


def test_a_request_out_and_late_is_copied_and_the_first_answer_wins() -> None:
    stalled = threading.Event()

    def send() -> str:
        request_sent()
        stalled.wait(timeout=30)
        return "the request"

    def copy() -> str:
        stalled.set()
        return "a copy"

    assert hedged(send, copy, AFTER) == "a copy"
