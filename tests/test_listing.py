"""The accounts listing against an in-memory /v1/users: complete while accounts change, and
its pages fetched side by side within its share of max_concurrency.

The end-to-end listing (through the tap, against the sandbox) is covered in test_accounts.py
and test_sync.py; these cases need changes timed between two given requests.
"""

from __future__ import annotations

import threading
import typing as t
from datetime import datetime, timedelta, timezone

import pytest

from tap_analytics.listing import AccountListing, Prefetch
from tap_analytics.pagination import Envelope, Paging
from tap_analytics.timestamps import api_form, epoch

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_analytics.pagination import WindowCursor

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class FakeUsers:
    """`/v1/users` as the reference has it, whose clock moves a second per request.

    `on_request(n)` runs (under the lock) as the n-th request arrives, before it is answered.
    """

    def __init__(self, accounts: int, on_request: Callable[[FakeUsers, int], None]) -> None:
        self.updated_at = {f"{17_900_000_000 + n}": n for n in range(accounts)}
        self.clock = accounts
        self.requests = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self._on_request = on_request
        self._lock = threading.Lock()
        #: Requests wait here, when set, so that a test can see how many are out at once.
        self.gate: threading.Barrier | None = None

    def fetch(self, cursor: WindowCursor) -> tuple[Envelope, str]:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._on_request(self, self.requests)
            self.clock += 1
        try:
            if self.gate is not None and cursor.offset:
                self.gate.wait()
            with self._lock:
                return self._answer(cursor), api_form(START + timedelta(seconds=self.clock))
        finally:
            with self._lock:
                self.in_flight -= 1

    def move(self, account: str) -> None:
        """The account changes now: it sorts last, stamped with the clock."""
        self.updated_at[account] = self.clock

    def _answer(self, cursor: WindowCursor) -> Envelope:
        since, until = cursor.updated_since, cursor.updated_until
        low = -1 if since is None else self._seconds(since)
        high = float("inf") if until is None else self._seconds(until)
        rows = sorted(
            (stamp, account)
            for account, stamp in self.updated_at.items()
            if low <= stamp < high and (cursor.accounts is None or account in cursor.accounts)
        )
        page = rows[cursor.offset : cursor.offset + 100]
        data = [{"id": account, "updated_at": self._stamp(stamp)} for stamp, account in page]
        return Envelope(data, Paging(cursor.offset, 100, len(rows)))

    @staticmethod
    def _stamp(seconds: int) -> str:
        return api_form(START + timedelta(seconds=seconds))

    @staticmethod
    def _seconds(stamp: str) -> int:
        return int(epoch(stamp) - START.timestamp())


def listing(api: FakeUsers, user_ids: list[str] | None = None) -> AccountListing:
    return AccountListing(api.fetch, 100, user_ids, max_concurrency=8)


def test_accounts_that_change_or_go_while_the_listing_reads_are_not_lost() -> None:
    moved = [f"{17_900_000_000 + n}" for n in (990, 991, 992)]  # on the last page
    deleted = [f"{17_900_000_000 + n}" for n in (5, 500)]

    def change(api: FakeUsers, request: int) -> None:
        if request == 2:  # after the first page, before the window's other pages
            for account in moved:
                api.move(account)
            for account in deleted:
                del api.updated_at[account]

    api = FakeUsers(1000, change)
    reader = listing(api)
    reader.first_page()
    visible = reader.rest()
    # The changed accounts moved past the window's end: only the walk beyond it reads them.
    # A deleted account may have been read before it went (the first page's was).
    assert set(api.updated_at) <= visible <= set(api.updated_at) | set(deleted)


def test_a_list_of_one_page_is_read_in_one_request() -> None:
    api = FakeUsers(60, lambda api, request: None)
    reader = listing(api)
    reader.first_page()
    assert reader.rest() == set(api.updated_at)
    assert api.requests == 1


def test_the_listing_fetches_pages_side_by_side_within_a_quarter_of_max_concurrency() -> None:
    api = FakeUsers(1000, lambda api, request: None)
    # Two requests must be out together to pass; one after another, the first waits in vain.
    api.gate = threading.Barrier(2, timeout=30)
    reader = listing(api)
    reader.first_page()
    assert reader.rest() == set(api.updated_at)
    assert api.most_in_flight == 2  # 8 // 4, and never more: pages ahead are bounded


def test_each_50_of_user_ids_is_listed_and_only_those_the_key_sees() -> None:
    api = FakeUsers(300, lambda api, request: None)
    wanted = [*sorted(api.updated_at)[::2], "17999999999"]  # 150 ids, one the key cannot see
    reader = listing(api, wanted)
    reader.first_page()
    assert reader.rest() == set(wanted) - {"17999999999"}
    assert api.requests == 4  # a page for each 50 ids, each whole at once


def test_prefetch_hands_results_over_in_order_and_an_error_with_its_result() -> None:
    def fail() -> int:
        raise ValueError("page 2")

    calls: list[Callable[[], int]] = [lambda: 1, fail, lambda: 3]
    ahead = Prefetch(calls, 2)
    assert ahead.next() == 1
    with pytest.raises(ValueError, match="page 2"):
        ahead.next()
    assert ahead.next() == 3
