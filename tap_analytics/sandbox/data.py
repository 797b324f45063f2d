"""The deterministic synthetic dataset: compact per-record state, kept in API order.

Each record lives in a slot of its resource and is stored only as its sort key
(`updated_at` on 10 digits followed by the id) and a version; its fields are assembled when it
is served (see records.py). Sorted key lists make every page a bisect plus a slice.
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Iterable

import msgspec

from tap_analytics.sandbox.records import (
    FIRST_UPDATE,
    RESOURCES,
    SPECS,
    Ids,
    Record,
    ResourceSpec,
    format_timestamp,
    make_bodies,
)

Row = tuple[int, int, str]  # slot, version, sort key: all a record needs to be rendered
_TS_DIGITS = 10
_MAX_TS = 10**_TS_DIGITS - 1


def _ts_key(epoch: int) -> str:
    """Return the sort-key prefix of an instant (clamped so that it keeps 10 digits)."""
    return f"{min(max(epoch, 0), _MAX_TS):0{_TS_DIGITS}d}"


class Table:
    """One resource: the sorted keys of its live records and the state of every slot."""

    def __init__(
        self, spec: ResourceSpec, ids: Ids, record_ids: list[str], timestamps: Iterable[int]
    ) -> None:
        self.spec = spec
        self._ids = ids
        keys = [f"{ts:0{_TS_DIGITS}d}{rid}" for rid, ts in zip(record_ids, timestamps, strict=True)]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self.keys = [keys[slot] for slot in order]  # API order: updated_at, then id
        self.slots = array("q", order)  # slot of each entry of keys
        self.key_of: list[str | None] = list(keys)  # by slot; None once deleted
        self.versions = array("q", [0]) * len(keys)  # by slot

    def __len__(self) -> int:
        return len(self.keys)

    def page(
        self, since: int | None, until: int | None, offset: int, limit: int
    ) -> tuple[int, list[Row]]:
        """Return the number of records in the time range and the rows of the requested page."""
        keys = self.keys
        low = 0 if since is None else bisect_left(keys, _ts_key(since))
        high = len(keys) if until is None else bisect_left(keys, _ts_key(until))
        total = max(0, high - low)
        start = low + offset
        return total, [
            (self.slots[i], self.versions[self.slots[i]], keys[i])
            for i in range(start, min(high, start + limit))
        ]

    def page_of_accounts(
        self, accounts: Iterable[int], since: int | None, until: int | None, offset: int, limit: int
    ) -> tuple[int, list[Row]]:
        """Like page, for the records of some accounts: work grows with their records only."""
        low = "" if since is None else _ts_key(since)
        high = "~" if until is None else _ts_key(until)  # "~" sorts after every digit
        found = []
        for account in accounts:
            for slot in self._slots_of(account):
                key = self.key_of[slot]
                if key is not None and low <= key < high:
                    found.append((key, slot))
        found.sort()
        return len(found), [
            (slot, self.versions[slot], key) for key, slot in found[offset : offset + limit]
        ]

    def _slots_of(self, account: int) -> range:
        """Return the slots that may hold records of an account."""
        if self.spec.per_account:
            return range(account, min(account + 1, len(self.key_of)))
        return range(account, len(self.key_of), self._ids.accounts)

    def add(self, epoch: int) -> None:
        """Append a new slot holding a record updated at epoch."""
        slot = len(self.key_of)
        key = f"{epoch:0{_TS_DIGITS}d}{self.spec.make_id(self._ids, slot)}"
        self.key_of.append(key)
        self.versions.append(0)
        self._insert(key, slot)

    def touch(self, slot: int, epoch: int) -> None:
        """Give a live record new field values (next version) and updated_at = epoch."""
        old = self._unlink(slot)
        self.versions[slot] += 1
        key = _ts_key(epoch) + old[_TS_DIGITS:]
        self.key_of[slot] = key
        self._insert(key, slot)

    def remove(self, slot: int) -> None:
        """Delete a live record."""
        self._unlink(slot)
        self.key_of[slot] = None

    def _insert(self, key: str, slot: int) -> None:
        position = bisect_left(self.keys, key)
        self.keys.insert(position, key)
        self.slots.insert(position, slot)

    def _unlink(self, slot: int) -> str:
        key = self.key_of[slot]
        if key is None:
            raise KeyError(f"{self.spec.name} slot {slot} is deleted")
        position = bisect_left(self.keys, key)
        del self.keys[position]
        del self.slots[position]
        return key


class Clock:
    """The server's clock, which stamps `updated_at` and the `Date` header.

    Frozen, it stands still until advanced, so that tests decide which second a change lands
    in instead of waiting for the wall clock to tick.
    """

    def __init__(self, *, frozen: bool) -> None:
        self._frozen = frozen
        self._offset = 0
        self._start = int(time.time())

    def now(self) -> int:
        """Epoch seconds."""
        return self._start + self._offset if self._frozen else int(time.time()) + self._offset

    def advance(self, seconds: int) -> None:
        """Move the clock forward."""
        self._offset += seconds


class Dataset:
    """All seven resources, thread-safe: queries and mutations hold one lock briefly."""

    def __init__(
        self, records_per_resource: int, seed: int, clock: Clock, accounts: int = 0
    ) -> None:
        self.clock = clock
        # One account per record unless fewer are asked for; then the per-account resources
        # (users, their lifetime insights) have one record per account.
        accounts = min(accounts or records_per_resource, records_per_resource)
        self.ids = Ids(seed, accounts)
        span = max(1, records_per_resource // 3)  # ~3 records per second: many updated_at ties
        self._tables: dict[str, Table] = {}
        self._bodies: dict[str, dict[str, list[Record]]] = {}
        id_lists: dict[object, list[str]] = {}  # resources with the same id maker share a list
        for spec in SPECS:
            count = accounts if spec.per_account else records_per_resource
            if spec.make_id not in id_lists:
                id_lists[spec.make_id] = [spec.make_id(self.ids, s) for s in range(count)]
            rng = random.Random(f"{seed}:{spec.name}:updated_at")
            timestamps = (FIRST_UPDATE + int(rng.random() * span) for _ in range(count))
            self._tables[spec.name] = Table(spec, self.ids, id_lists[spec.make_id], timestamps)
            self._bodies[spec.name] = make_bodies(spec, seed)
        self._families = {
            spec.name: [spec.name] + [s.name for s in SPECS if s.companion_of == spec.name]
            for spec in SPECS
            if spec.companion_of is None
        }
        self._rng = random.Random(f"{seed}:mutations")
        self._lock = threading.Lock()

    def query(
        self,
        resource: str,
        since: int | None,
        until: int | None,
        accounts: list[int] | None,
        offset: int,
        limit: int,
    ) -> tuple[int, list[Row]]:
        """Return (total, rows of the page) for a list request, as the data is now.

        Args:
            resource: resource name.
            since: inclusive lower bound of updated_at (epoch seconds), or None.
            until: exclusive upper bound of updated_at (epoch seconds), or None.
            accounts: account slots to keep, or None for all accounts.
            offset: index of the first row.
            limit: maximum number of rows.
        """
        table = self._tables[resource]
        with self._lock:
            if accounts is None:
                return table.page(since, until, offset, limit)
            return table.page_of_accounts(accounts, since, until, offset, limit)

    def render(self, resource: str, row: Row) -> Record:
        """Return the record of a row as the API serves it (nested values are shared: read only)."""
        slot, version, key = row
        spec, ids = RESOURCES[resource], self.ids
        pool = self._bodies[resource][spec.variant(ids, slot)]
        body = pool[(ids.spread(slot) + version) % len(pool)]
        updated_at = format_timestamp(int(key[:_TS_DIGITS]))
        return spec.assemble(ids, slot, key[_TS_DIGITS:], body, updated_at)

    def snapshot(self) -> dict[str, list[Record]]:
        """Return every resource's current records, in API order, as independent copies."""
        with self._lock:
            rows = {
                name: table.page(None, None, 0, len(table))[1]
                for name, table in self._tables.items()
            }
        records = {name: [self.render(name, row) for row in page] for name, page in rows.items()}
        return msgspec.json.decode(msgspec.json.encode(records), type=dict[str, list[Record]])

    def mutate(
        self,
        updates: int = 0,
        inserts: int = 0,
        deletes: int = 0,
        resources: Iterable[str] | None = None,
    ) -> None:
        """Change the data now: update, insert and delete records of random (seeded) resources.

        Updates touch only `resources` when given. Inserts and deletes of media, stories and
        users carry their insights records along.
        """
        now = self.clock.now()
        rng = self._rng
        updatable = list(resources) if resources is not None else list(self._tables)
        with self._lock:
            for _ in range(updates):
                table = self._pick_table(rng, updatable)
                if table is not None:
                    table.touch(table.slots[rng.randrange(len(table))], now)
            for _ in range(inserts):
                family = self._families[rng.choice(list(self._families))]
                for name in family:
                    self._tables[name].add(now)
            for _ in range(deletes):
                primary = self._pick_table(rng, list(self._families))
                if primary is not None:
                    slot = primary.slots[rng.randrange(len(primary))]
                    for name in self._families[primary.spec.name]:
                        self._tables[name].remove(slot)

    def _pick_table(self, rng: random.Random, names: list[str]) -> Table | None:
        """Return a random non-empty table among names, or None if all are empty."""
        candidates = [self._tables[name] for name in names if len(self._tables[name])]
        return rng.choice(candidates) if candidates else None
