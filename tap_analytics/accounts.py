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

import typing as t
from dataclasses import dataclass

from tap_analytics import timestamps
from tap_analytics.pagination import Window

if t.TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Future

    from singer_sdk.helpers.types import TapState

    from tap_analytics.client import StateSink

#: The API's `user_id` filter takes at most this many accounts.
MAX_USER_IDS = 50


class SortedIds(tuple[str, ...]):
    """A group's account ids as STATE lists them, sorted once.

    Immutable, so a copy of the state shares it: the SDK's StateWriter deep-copies every
    STATE it writes (to skip the next if equal), which otherwise copied every id each time.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, object]) -> SortedIds:
        return self


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


class HeldState:
    """STATE held back while the account listing is read beside the streams' first pages.

    A STATE moves bookmarks, and a moved bookmark is only safe once the listing has said
    which accounts left (they leave the coverage): so no STATE is written before the listing
    is complete, and none after it failed (the run fails; the next resumes from the last one).
    The records written meanwhile are claimed by the first STATE after it.
    """

    def __init__(self, sink: StateSink) -> None:
        self._sink = sink
        self._listing: Future[frozenset[str]] | None = None
        self._then: Callable[[], object] = lambda: None

    def hold_until(self, listing: Future[frozenset[str]], then: Callable[[], object]) -> None:
        """Hold STATE until `listing` is done (for good if it failed); `then` before the first."""
        self._listing, self._then = listing, then

    def write_state(self, state: TapState) -> None:
        """Write `state` as a STATE message if it changed and is not held."""
        listing = self._listing
        if listing is not None:
            if not listing.done() or listing.exception() is not None:
                return
            self._listing = None
            self._then()
        self._sink.write_state(state)


class AccountLedger:
    """Coverage and backfills of every stream, read from and written into the tap's STATE."""

    def __init__(self, own_state: dict[str, t.Any]) -> None:
        self._own = own_state
        # Coverage is O(accounts) and most streams cover the same ones: equal sets are one
        # object (`_shared`), and each is sorted for STATE once (`_listed`).
        self._listed: dict[frozenset[str], SortedIds] = {}
        self.coverage: dict[str, frozenset[str]] = {}
        for group in own_state.get("accounts", []):
            ids = self._shared(frozenset(group["ids"]))
            for stream in group["streams"]:
                self.coverage[stream] = ids
        self.backfills: dict[str, list[Backfill]] = {
            stream: [Backfill.from_state(stream, saved) for saved in pending]
            for stream, pending in own_state.get("backfills", {}).items()
        }

    def plan(
        self,
        stream: str,
        bookmark: str | None,
        visible: frozenset[str],
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
        covered = self.coverage.get(stream, visible)
        if start is not None and timestamps.epoch(start) >= timestamps.epoch(bookmark):
            covered = visible  # history before the bookmark is outside start_date
        elif again or not covered <= visible:
            covered = self._shared((covered & visible) - again)
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

    def cover(self, stream: str, visible: frozenset[str]) -> None:
        """The stream has read every visible account's history (a reconciliation)."""
        self.coverage[stream] = self._shared(visible)
        self.backfills.pop(stream, None)
        self._save()

    def advance(self, backfill: Backfill, bookmark: str) -> None:
        """The backfill has written everything before `bookmark`."""
        backfill.updated_since = bookmark
        self._save()

    def complete(self, backfill: Backfill) -> None:
        """The backfill is written: its accounts are covered."""
        self.backfills[backfill.stream].remove(backfill)
        covered = self.coverage.get(backfill.stream, frozenset())
        self.coverage[backfill.stream] = self._shared(covered | frozenset(backfill.accounts))
        self._save()

    def _shared(self, ids: frozenset[str]) -> frozenset[str]:
        """The one object equal to `ids` that the ledger holds (`ids` itself if new)."""
        for held in self.coverage.values():
            if held is ids or held == ids:
                return held
        return ids

    def _save(self) -> None:
        groups: dict[frozenset[str], list[str]] = {}
        for stream, ids in sorted(self.coverage.items()):
            groups.setdefault(ids, []).append(stream)
        self._listed = {ids: self._listed.get(ids) or SortedIds(sorted(ids)) for ids in groups}
        self._own["accounts"] = [
            {"streams": streams, "ids": self._listed[ids]} for ids, streams in groups.items()
        ]
        self._own["backfills"] = {
            stream: [backfill.as_state() for backfill in pending]
            for stream, pending in sorted(self.backfills.items())
            if pending
        }
