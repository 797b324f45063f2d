"""Accounts that join a job later: which accounts each stream has read whole, and backfills.

A stream's bookmark says how far its reads have come for the accounts it was reading. An
account that joins later (added to `user_ids`, or granted to the key, its records keeping
their old `updated_at`) has history before that bookmark that no incremental read will see.
So STATE also records, per stream, the accounts whose history the stream has read (its
*coverage*), and each run compares it with the accounts in scope and visible to the key:

* a stream without a bookmark reads everything from `start_date`: it covers every account;
* an account visible and in scope but not covered is backfilled: the stream is read for it
  alone from `start_date` up to the bookmark (the incremental window, which includes it,
  reads on from there), and only once that backfill is written is it covered;
* an account that left the scope or the key's sight leaves the coverage of every stream read
  this run (its records may change unseen while it is away): if it comes back, it is
  backfilled again. A stream not read this run keeps its coverage: its bookmark stood still.

STATE stays compact: streams that cover the same accounts share one list of ids.
"""

from __future__ import annotations

import math
import typing as t
from dataclasses import dataclass

from tap_analytics import timestamps
from tap_analytics.pagination import KeysetPaginator, Window, WindowCursor

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tap_analytics.pagination import Envelope

#: The API's `user_id` filter takes at most this many accounts.
MAX_USER_IDS = 50


@dataclass
class Backfill:
    """One stream read for some accounts from `updated_since` (its progress) to the bookmark."""

    stream: str
    accounts: tuple[str, ...]
    updated_since: str | None
    updated_until: str

    @property
    def window(self) -> Window:
        """What the backfill has left to read."""
        return Window(self.updated_since, self.updated_until, self.accounts)

    def as_state(self) -> dict[str, t.Any]:
        """The backfill as STATE keeps it."""
        return {
            "ids": list(self.accounts),
            "updated_since": self.updated_since,
            "updated_until": self.updated_until,
        }

    @classmethod
    def from_state(cls, stream: str, saved: t.Mapping[str, t.Any]) -> Backfill:
        """A backfill STATE kept, resumed where it had come."""
        return cls(stream, tuple(saved["ids"]), saved["updated_since"], saved["updated_until"])


def visible_accounts(
    fetch: Callable[[WindowCursor], tuple[Envelope, str]],
    page_size: int,
    user_ids: Iterable[str] | None,
) -> tuple[set[str], str]:
    """The accounts in the job's scope that the key sees, from `/v1/users`; the API's clock.

    With `user_ids`, the accounts of each 50 of them (the API lists only those the key may
    see); without, every account. A keyset walk with no upper bound reads them: an account
    changed meanwhile moves ahead of it and is still read. Should the accounts change faster
    than the walk reads (it stops after twice the pages the first answer calls for), those
    it did not reach count as unseen: they are backfilled again by a later run, never lost.
    """
    ids = sorted(set(user_ids or ()))
    scopes: list[tuple[str, ...] | None] = [
        tuple(ids[i : i + MAX_USER_IDS]) for i in range(0, len(ids), MAX_USER_IDS)
    ]
    visible: set[str] = set()
    clocks = []
    for accounts in scopes or [None]:
        walk = KeysetPaginator(None, None, max(page_size, 2), accounts)
        pages = 0
        budget = 1
        while not walk.finished and pages < budget:
            page, clock = fetch(walk.current_value)
            clocks.append(clock)
            if pages == 0:
                budget = 2 * (1 + math.ceil((page.paging.total or 0) / (page_size - 1))) + 2
            visible.update(record["id"] for record in walk.unread(page))
            walk.advance(page)
            pages += 1
    return visible, clocks[0]


class AccountLedger:
    """Coverage and backfills of every stream, read from and written into the tap's STATE."""

    def __init__(self, own_state: dict[str, t.Any]) -> None:
        self._own = own_state
        self.coverage: dict[str, set[str]] = {}
        for group in own_state.get("accounts", []):
            for stream in group["streams"]:
                self.coverage[stream] = set(group["ids"])
        self.backfills: dict[str, list[Backfill]] = {
            stream: [Backfill.from_state(stream, saved) for saved in pending]
            for stream, pending in own_state.get("backfills", {}).items()
        }

    def plan(
        self,
        stream: str,
        bookmark: str | None,
        visible: set[str],
        start: str | None,
        again: t.AbstractSet[str] = frozenset(),
    ) -> list[Backfill]:
        """This run's backfills of `stream`, which reads now from `bookmark`.

        `visible` are the accounts in scope the key sees; `start` is where a backfill starts;
        `again` are accounts to backfill even if covered (the `backfill_user_ids` setting).
        """
        if bookmark is None:
            # The stream reads from `start` for every account: nothing to backfill.
            self.cover(stream, visible)
            return []
        # Coverage of a STATE from before coverage was kept: every visible account (what the
        # release before assumed, and the README says).
        covered = self.coverage.get(stream, visible) & (visible - again)
        if start is not None and timestamps.epoch(start) >= timestamps.epoch(bookmark):
            covered = set(visible)  # history before the bookmark is outside start_date
        pending = []
        for backfill in self.backfills.get(stream, []):
            accounts = tuple(a for a in backfill.accounts if a in visible)
            if accounts:
                pending.append(
                    Backfill(stream, accounts, backfill.updated_since, backfill.updated_until)
                )
        waiting = {account for backfill in pending for account in backfill.accounts}
        new = sorted(visible - covered - waiting)
        for first in range(0, len(new), MAX_USER_IDS):
            accounts = tuple(new[first : first + MAX_USER_IDS])
            pending.append(Backfill(stream, accounts, start, bookmark))
        self.coverage[stream] = covered
        self.backfills[stream] = pending
        self._save()
        return list(pending)

    def cover(self, stream: str, visible: set[str]) -> None:
        """The stream has read every visible account's history (a reconciliation)."""
        self.coverage[stream] = set(visible)
        self.backfills.pop(stream, None)
        self._save()

    def advance(self, backfill: Backfill, bookmark: str) -> None:
        """The backfill has written everything before `bookmark`."""
        backfill.updated_since = bookmark
        self._save()

    def complete(self, backfill: Backfill) -> None:
        """The backfill is written: its accounts are covered."""
        self.backfills[backfill.stream].remove(backfill)
        self.coverage.setdefault(backfill.stream, set()).update(backfill.accounts)
        self._save()

    def _save(self) -> None:
        groups: dict[frozenset[str], list[str]] = {}
        for stream, ids in sorted(self.coverage.items()):
            groups.setdefault(frozenset(ids), []).append(stream)
        self._own["accounts"] = [
            {"streams": streams, "ids": sorted(ids)} for ids, streams in groups.items()
        ]
        self._own["backfills"] = {
            stream: [backfill.as_state() for backfill in pending]
            for stream, pending in sorted(self.backfills.items())
            if pending
        }
