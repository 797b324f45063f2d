"""Property tests of the window reads: no record present for the whole run is ever missed."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tap_analytics.pagination import (
    Envelope,
    KeysetPaginator,
    OverlapChain,
    Paging,
    WindowCursor,
)

UNTIL = "T999999"


def stamp(second: int) -> str:
    """Fixed-width timestamps, so that string order is time order, as with the API's."""
    return f"T{second:06d}"


class FakeApi:
    """The reference's list semantics over a dict: filter, order by (updated_at, id), slice."""

    def __init__(self, stamps: dict[str, str], drop_total: bool) -> None:
        self.stamps = dict(stamps)
        self.drop_total = drop_total

    def page(self, cursor: WindowCursor, limit: int) -> Envelope:
        matching = sorted(
            (updated_at, record_id)
            for record_id, updated_at in self.stamps.items()
            if (cursor.updated_since is None or updated_at >= cursor.updated_since)
            and updated_at < cursor.updated_until
        )
        rows = matching[cursor.offset : cursor.offset + limit]
        return Envelope(
            data=[{"id": record_id, "updated_at": updated_at} for updated_at, record_id in rows],
            paging=Paging(cursor.offset, limit, None if self.drop_total else len(matching)),
        )

    def mutate(self, rng: random.Random, changes: int, serial: list[int]) -> set[str]:
        """Delete, update (moves past the window) or insert records; returns the ids touched."""
        touched = set()
        for _ in range(changes):
            kind = rng.choice(["delete", "update", "insert"])
            if kind == "insert" or not self.stamps:
                serial[0] += 1
                self.stamps[f"new{serial[0]}"] = UNTIL
                continue
            record_id = rng.choice(sorted(self.stamps))
            touched.add(record_id)
            if kind == "delete":
                del self.stamps[record_id]
            else:
                self.stamps[record_id] = UNTIL
        return touched


def walk(api: FakeApi, page_size: int, rng: random.Random, changes: int) -> tuple[set[str], set]:
    """Read the window with the tap's paginator, changing the data between requests."""
    paginator = KeysetPaginator(None, UNTIL, page_size)
    read: set[str] = set()
    touched: set[str] = set()
    serial = [0]
    for _ in range(10_000):
        if paginator.finished:
            return read, touched
        envelope = api.page(paginator.current_value, page_size)
        read.update(record["id"] for record in paginator.unread(envelope))
        paginator.advance(envelope)
        touched |= api.mutate(rng, changes, serial)
    raise AssertionError("the walk did not end")


def fan_out(
    api: FakeApi, page_size: int, rng: random.Random, changes: int, ahead: int
) -> tuple[list[tuple[str, str]], set[str], int]:
    """Read the window as the scheduler does: pages fetched ahead, in shuffled order, with
    the data changing between requests, joined by the chain (which walks its gaps)."""
    chain = OverlapChain(None, UNTIL, page_size)
    fetched: dict[int, Envelope] = {}
    touched: set[str] = set()
    serial, requests = [0], [0]

    def get(cursor: WindowCursor) -> Envelope:
        requests[0] += 1
        page = api.page(cursor, page_size)
        touched.update(api.mutate(rng, changes, serial))
        return page

    def page_at(index: int) -> Envelope:
        if index not in fetched:
            batch = [k for k in range(index, index + ahead) if k not in fetched]
            rng.shuffle(batch)
            for k in batch:
                fetched[k] = get(chain.cursor(k))
        return fetched.pop(index)

    written = [(r["updated_at"], r["id"]) for batch in chain.read(page_at, get) for r in batch]
    return written, touched, requests[0]


def offset_walk(api: FakeApi, page_size: int, rng: random.Random, changes: int) -> set[str]:
    """What a plain offset reader sees under the same changes."""
    read: set[str] = set()
    offset, serial = 0, [0]
    while True:
        envelope = api.page(WindowCursor(None, UNTIL, offset), page_size)
        read.update(record["id"] for record in envelope.data)
        if len(envelope.data) < page_size:
            return read
        offset += page_size
        api.mutate(rng, changes, serial)


datasets = st.dictionaries(
    keys=st.from_regex(r"[0-9]{1,4}", fullmatch=True),
    values=st.integers(min_value=0, max_value=6).map(stamp),  # few instants: many ties
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    stamps=datasets,
    page_size=st.integers(min_value=2, max_value=8),
    changes=st.integers(min_value=0, max_value=3),
    seed=st.integers(min_value=0, max_value=2**32),
    drop_total=st.booleans(),
)
def test_walk_reads_every_record_present_for_the_whole_run(
    stamps: dict[str, str], page_size: int, changes: int, seed: int, drop_total: bool
) -> None:
    api = FakeApi(stamps, drop_total)
    read, touched = walk(api, page_size, random.Random(seed), changes)
    assert set(stamps) - touched <= read


@settings(max_examples=300, deadline=None)
@given(
    stamps=datasets,
    page_size=st.integers(min_value=2, max_value=8),
    changes=st.integers(min_value=0, max_value=3),
    ahead=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=2**32),
    drop_total=st.booleans(),
)
def test_fanned_out_pages_give_every_record_present_for_the_whole_run_once_in_order(
    stamps: dict[str, str], page_size: int, changes: int, ahead: int, seed: int, drop_total: bool
) -> None:
    api = FakeApi(stamps, drop_total)
    written, touched, _ = fan_out(api, page_size, random.Random(seed), changes, ahead)
    assert set(stamps) - touched <= {record_id for _, record_id in written}
    assert written == sorted(set(written)), "out of order or written twice"


@given(stamps=datasets, page_size=st.integers(min_value=2, max_value=8))
def test_a_window_that_does_not_change_takes_one_request_per_page(
    stamps: dict[str, str], page_size: int
) -> None:
    chain = OverlapChain(None, UNTIL, page_size)
    written, _, requests = fan_out(FakeApi(stamps, False), page_size, random.Random(0), 0, 1)
    assert len(written) == len(stamps)
    assert requests == chain.pages_for(len(stamps))


def test_a_plain_offset_reader_loses_records_in_the_same_setup() -> None:
    """The property above can fail: offsets alone skip records when earlier ones leave."""
    stamps = {f"{n:03d}": stamp(n % 5) for n in range(200)}
    read = offset_walk(FakeApi(stamps, False), 10, random.Random(7), changes=3)
    keyset_read, touched = walk(FakeApi(stamps, False), 10, random.Random(7), changes=3)
    untouched = set(stamps) - touched
    assert untouched <= keyset_read
    assert untouched - read, "the offset reader should have skipped some records"
