"""Listing the accounts in a job's scope that the key sees, pages fetched side by side.

Each run lists them (`/v1/users`) to tell which accounts joined or left (accounts.py). In a
nightly run whose streams have little new, the listing is most of the run's requests, and a
walk that asks for one page after another costs a round trip per 99 accounts.
"""

from __future__ import annotations

import math
import threading
import typing as t
from collections import deque
from concurrent.futures import Future
from functools import partial

from tap_analytics.accounts import MAX_USER_IDS
from tap_analytics.pagination import KeysetPaginator, OverlapChain, WindowCursor

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tap_analytics.pagination import Envelope

R = t.TypeVar("R")

#: The listing fetches up to `max_concurrency` // this many pages at a time (one at least),
#: on connections of its own beside the streams' workers.
SHARE_OF_MAX_CONCURRENCY = 4


class AccountListing:
    """The accounts in the job's scope that the key sees, from `/v1/users`; the API's clock.

    With `user_ids`, the accounts of each 50 of them (the API lists only those the key may
    see); without, every account. Each such scope is read from a first page asked with no
    upper end: a page that ends the list holds every account at that moment. A longer list is
    read as a window up to the API's clock at that page, its pages fetched side by side (a
    quarter of `max_concurrency` at a time) and joined where they overlap (`OverlapChain`,
    which walks where accounts left meanwhile), then by a keyset walk from that clock on with
    no upper end: an account changed meanwhile has moved past the window, ahead of the walk,
    and is still read. Should the accounts change faster than the walk reads (it stops after
    twice the pages the first answer calls for), those it did not reach count as unseen: they
    are backfilled again by a later run, never lost.

    The first page is read alone (`first_page`), so that an `api_url` that is not the API or
    a rejected key ends the run after one request; the rest (`rest`) may be read meanwhile
    streams read their windows, which do not depend on it.
    """

    def __init__(
        self,
        fetch: Callable[[WindowCursor], tuple[Envelope, str]],
        page_size: int,
        user_ids: Iterable[str] | None,
        max_concurrency: int = 1,
    ) -> None:
        self._fetch = fetch
        self._page_size = max(page_size, 2)
        self._workers = max(1, max_concurrency // SHARE_OF_MAX_CONCURRENCY)
        ids = sorted(set(user_ids or ()))
        self._scopes: list[tuple[str, ...] | None] = [
            tuple(ids[i : i + MAX_USER_IDS]) for i in range(0, len(ids), MAX_USER_IDS)
        ] or [None]
        self._first: tuple[Envelope, str] | None = None
        self._visible: set[str] = set()

    def first_page(self) -> str:
        """Read the first page; return the API's clock when it answered."""
        self._first = self._fetch(_from_the_start(self._scopes[0]))
        return self._first[1]

    def rest(self) -> set[str]:
        """Read the other pages; return the accounts visible and in scope."""
        assert self._first is not None, "first_page() reads the first page"
        first = self._first
        calls = [partial(self._fetch, _from_the_start(scope)) for scope in self._scopes[1:]]
        others = Prefetch(calls, self._workers)
        for index, scope in enumerate(self._scopes):
            page, clock = first if index == 0 else others.next()
            chain = OverlapChain(None, clock, self._page_size, scope)
            if chain.ends_window(0, page):
                self._visible.update(record["id"] for record in page.data)
            else:
                self._read_window(chain, page)
                self._walk_on(chain, page.paging.total)
        return self._visible

    def _read_window(self, chain: OverlapChain, first: Envelope) -> None:
        """Read the scope's accounts stamped before its clock, pages fetched side by side.

        The first page, asked with no upper end, stands in for the window's if it can
        (`OverlapChain.first_page_stands_in`).
        """

        def page(index: int) -> Envelope:
            return self._fetch(chain.cursor(index))[0]

        planned = chain.pages_for(first.paging.total)
        if not chain.first_page_stands_in(first):
            first = page(0)
        ahead = Prefetch([partial(page, index) for index in range(1, planned)], self._workers)

        def page_at(index: int) -> Envelope:
            if index == 0:
                return first
            return ahead.next() if index < planned else page(index)

        for records in chain.read(page_at, lambda cursor: self._fetch(cursor)[0]):
            self._visible.update(record["id"] for record in records)

    def _walk_on(self, chain: OverlapChain, total: int | None) -> None:
        """Read the scope's accounts stamped at or after its clock: those that changed since."""
        walk = KeysetPaginator(chain.updated_until, None, self._page_size, chain.accounts)
        budget = 2 * (1 + math.ceil((total or 0) / (self._page_size - 1))) + 2
        for _ in range(budget):
            page, _clock = self._fetch(walk.current_value)
            self._visible.update(record["id"] for record in walk.unread(page))
            walk.advance(page)
            if walk.finished:
                return


def _from_the_start(scope: tuple[str, ...] | None) -> WindowCursor:
    """The request for a scope's first page, with no upper end."""
    return WindowCursor(None, None, 0, scope)


class Prefetch(t.Generic[R]):
    """The results of calls in order, up to `ahead` of them running at a time.

    Each call runs in a daemon thread of its own: a run that fails meanwhile exits without
    waiting for it. A call's error is raised when its result is taken.
    """

    def __init__(self, calls: Iterable[Callable[[], R]], ahead: int) -> None:
        self._calls = iter(calls)
        self._running: deque[Future[R]] = deque()
        for _ in range(max(1, ahead)):
            self._start_next()

    def next(self) -> R:
        """The next call's result, once it is in; the call after the last started goes."""
        result = self._running.popleft().result()
        self._start_next()
        return result

    def _start_next(self) -> None:
        call = next(self._calls, None)
        if call is None:
            return
        future: Future[R] = Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the thread that takes the result
                future.set_exception(exc)

        threading.Thread(target=run, name="account-listing-page", daemon=True).start()
        self._running.append(future)
