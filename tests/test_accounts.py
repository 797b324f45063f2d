"""Accounts that join a job later arrive with their whole history, and cost nothing otherwise."""

from __future__ import annotations

import copy
import json
import math
import signal
import typing as t
from concurrent.futures import Future
from pathlib import Path

from taprun import (
    STREAMS,
    TapRun,
    ids,
    merged,
    run_tap,
    run_tap_until_killed,
    select_streams,
    tap_config,
)

from tap_analytics.accounts import AccountLedger, HeldState
from tap_analytics.sandbox import NO_LIFETIME_KEY

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer

Start = t.Callable[..., "SandboxServer"]
Snapshot = dict[str, list[dict[str, t.Any]]]


def account_ids(server: SandboxServer) -> list[str]:
    return sorted(ids(server.snapshot()["users"]))


def of_accounts(snapshot: Snapshot, accounts: t.Iterable[str]) -> dict[str, set[str]]:
    """Per stream, the ids of the records that belong to `accounts`."""
    wanted = set(accounts)
    return {
        stream: {r["id"] for r in records if r.get("user_id", r["id"]) in wanted}
        for stream, records in snapshot.items()
    }


def assert_whole_history(run: TapRun, snapshot: Snapshot, accounts: t.Iterable[str]) -> None:
    for stream, expected in of_accounts(snapshot, accounts).items():
        assert expected, f"the test needs records of these accounts in {stream}"
        assert expected <= ids(run.records(stream)), stream


def covered(run: TapRun, stream: str) -> set[str]:
    """The accounts the run's last STATE counts as read whole by `stream`."""
    groups = run.last_state["tap_analytics"]["accounts"]
    return {i for group in groups if stream in group["streams"] for i in group["ids"]}


def run_before_a_grant(
    server: SandboxServer, accounts: list[str], config: dict[str, t.Any], tmp_path: Path
) -> TapRun:
    """A run while the key cannot see `accounts`; then their owners grant it access."""
    server.configure(hidden_user_ids=accounts)
    run = run_tap(config, tmp_path)
    server.configure(hidden_user_ids=[])
    server.advance_clock(1)
    return run


def test_accounts_added_to_user_ids_arrive_whole_and_the_others_stay_incremental(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    accounts = account_ids(server)
    old, new = accounts[:3], accounts[3:6]
    first = run_tap(tap_config(server, user_ids=old), tmp_path)
    assert first.returncode == 0, first.stderr
    assert all(covered(first, stream) == set(old) for stream in STREAMS)
    server.advance_clock(1)

    second = run_tap(tap_config(server, user_ids=old + new), tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    snapshot = server.snapshot()
    for stream, expected in of_accounts(snapshot, new).items():
        assert ids(second.records(stream)) == expected, stream  # nothing of `old` again
        assert covered(second, stream) == set(old + new)
    summary = {s["stream"]: s for s in second.summary["streams"]}
    assert summary["media"]["backfilled_accounts"] == 3
    assert summary["media"]["backfilled_records"] == len(of_accounts(snapshot, new)["media"])
    assert "Stream media: backfilling 3 accounts new to it" in second.stderr
    assert second.last_state["tap_analytics"]["backfills"] == {}


def test_an_id_added_before_the_key_may_see_it_is_backfilled_once_granted(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    accounts = account_ids(server)
    granted_later = accounts[5]
    server.configure(hidden_user_ids=[granted_later])
    config = tap_config(server, user_ids=[*accounts[:3], granted_later])
    first = run_tap(config, tmp_path)
    assert first.returncode == 0, first.stderr
    assert granted_later not in covered(first, "media")

    server.configure(hidden_user_ids=[])
    server.advance_clock(1)
    second = run_tap(config, tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    assert_whole_history(second, server.snapshot(), [granted_later])
    assert granted_later in covered(second, "media")


def test_accounts_granted_to_the_key_arrive_whole_without_user_ids(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    granted = account_ids(server)[10:12]
    first = run_before_a_grant(server, granted, tap_config(server), tmp_path)
    assert first.returncode == 0, first.stderr
    for stream, records in of_accounts(server.snapshot(), granted).items():
        assert not ids(first.records(stream)) & records, stream
    second = run_tap(tap_config(server), tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    for stream, expected in of_accounts(server.snapshot(), granted).items():
        assert ids(second.records(stream)) == expected, stream


def test_more_than_50_new_accounts_are_backfilled_50_at_a_time(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    granted = account_ids(server)[:60]
    first = run_before_a_grant(server, granted, tap_config(server), tmp_path)
    second = run_tap(tap_config(server), tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    for stream, expected in of_accounts(server.snapshot(), granted).items():
        assert ids(second.records(stream)) == expected, stream
    assert second.stderr.count("Stream media: backfilling 50 accounts new to it") == 1
    assert second.stderr.count("Stream media: backfilling 10 accounts new to it") == 1


def test_a_run_killed_during_a_backfill_resumes_it_without_loss(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True, latency_ms=5)
    granted = account_ids(server)[:50]
    config = tap_config(server, page_size=5)
    first = run_before_a_grant(server, granted, config, tmp_path)

    def a_backfill_under_way(line: bytes) -> bool:
        if not line.startswith(b'{"type":"STATE"'):
            return False
        backfills = json.loads(line)["value"]["tap_analytics"]["backfills"]
        return any(b["updated_since"] for pending in backfills.values() for b in pending)

    killed = run_tap_until_killed(config, tmp_path, a_backfill_under_way, first.last_state)
    assert killed.returncode == -signal.SIGKILL
    pending = killed.last_state["tap_analytics"]["backfills"]
    assert pending, "the run was killed after its backfills ended"
    for stream in pending:
        assert not set(granted) & covered(killed, stream), "claimed before it was written"

    resumed = run_tap(config, tmp_path, state=killed.last_state)
    assert resumed.returncode == 0, resumed.stderr
    for stream, expected in of_accounts(server.snapshot(), granted).items():
        assert expected <= ids(killed.records(stream)) | ids(resumed.records(stream)), stream
        assert set(granted) <= covered(resumed, stream)
    [stream] = list(pending)[:1]
    assert len(resumed.records(stream)) < len(of_accounts(server.snapshot(), granted)[stream])


def test_an_account_that_leaves_user_ids_and_comes_back_is_backfilled_again(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    accounts = account_ids(server)
    stays, leaves = accounts[:2], accounts[2:4]
    first = run_tap(tap_config(server, user_ids=stays + leaves), tmp_path)
    server.advance_clock(1)
    away = run_tap(tap_config(server, user_ids=stays), tmp_path, state=first.last_state)
    assert away.returncode == 0, away.stderr
    assert covered(away, "media") == set(stays)  # nothing re-read or deleted while away
    assert not any(away.records(stream) for stream in STREAMS)
    server.mutate(updates=40)  # what changes while they are away is seen by nobody
    server.advance_clock(1)

    back = run_tap(tap_config(server, user_ids=stays + leaves), tmp_path, state=away.last_state)
    assert back.returncode == 0, back.stderr
    snapshot = server.snapshot()
    assert_whole_history(back, snapshot, leaves)
    for stream, records in of_accounts(snapshot, leaves).items():
        latest = merged([first, away, back], stream)
        current = {r["id"]: r["updated_at"] for r in snapshot[stream] if r["id"] in records}
        assert {i: latest[i]["updated_at"].replace("+00:00", "+0000") for i in records} == current


def test_a_stream_selected_later_backfills_the_accounts_added_meanwhile(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    granted = account_ids(server)[20:23]
    config = tap_config(server)
    first = run_before_a_grant(server, granted, config, tmp_path)
    without_media = select_streams(config, tmp_path, [s for s in STREAMS if s != "media"])
    second = run_tap(config, tmp_path, "--catalog", str(without_media), state=first.last_state)
    assert second.returncode == 0, second.stderr
    assert not second.records("media")
    assert set(granted) <= covered(second, "stories")
    assert not set(granted) & covered(second, "media")
    server.advance_clock(1)

    third = run_tap(config, tmp_path, state=second.last_state)
    assert third.returncode == 0, third.stderr
    assert ids(third.records("media")) == of_accounts(server.snapshot(), granted)["media"]
    assert not third.records("stories")


def test_a_run_with_no_new_account_costs_only_the_accounts_listing(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    first = run_tap(tap_config(server), tmp_path)
    server.advance_clock(1)
    before = server.stats()["requests"]
    second = run_tap(tap_config(server), tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    # Pages of 100 that overlap by one, and one for the accounts changed while they were read.
    listing = 1 + math.ceil((len(account_ids(server)) - 100) / 99) + 1
    # Each stream's empty window: its first page, asked again within the window (test_sync).
    assert server.stats()["requests"] - before == listing + 2 * len(STREAMS)
    assert "backfilling" not in second.stderr


def test_a_stream_the_key_may_not_read_is_not_backfilled_every_run(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    granted = account_ids(server)[30:32]
    config = {**tap_config(server), "api_key": NO_LIFETIME_KEY}
    first = run_before_a_grant(server, granted, config, tmp_path)
    assert first.returncode == 1
    assert "replication_key_value" not in first.last_state["bookmarks"].get(
        "user_lifetime_insights", {}
    )
    second = run_tap(config, tmp_path, state=first.last_state)
    summary = {s["stream"]: s for s in second.summary["streams"]}
    assert summary["user_lifetime_insights"]["status"] == "failed"
    assert summary["user_lifetime_insights"]["requests"] == 1  # its window, refused: no backfill
    assert summary["user_lifetime_insights"]["backfilled_accounts"] == 0
    assert summary["media"]["backfilled_accounts"] == 2
    readable = {s: r for s, r in server.snapshot().items() if s != "user_lifetime_insights"}
    assert_whole_history(second, readable, granted)


def test_backfill_user_ids_reads_chosen_accounts_again(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    chosen = account_ids(server)[40:42]
    first = run_tap(tap_config(server), tmp_path)
    server.advance_clock(1)
    again = run_tap(tap_config(server, backfill_user_ids=chosen), tmp_path, state=first.last_state)
    assert again.returncode == 0, again.stderr
    for stream, expected in of_accounts(server.snapshot(), chosen).items():
        assert ids(again.records(stream)) == expected, stream


class Sink:
    def __init__(self) -> None:
        self.written: list[dict[str, t.Any]] = []

    def write_state(self, state: dict[str, t.Any]) -> None:
        self.written.append(dict(state))


def test_state_waits_for_the_account_listing_and_is_never_written_after_it_failed() -> None:
    # A unit test of one edge: the run's end to end path is every test above.
    sink = Sink()
    held = HeldState(sink)
    held.write_state({"n": 0})
    listing: Future[frozenset[str]] = Future()
    planned: list[int] = []
    held.hold_until(listing, then=lambda: planned.append(len(sink.written)))
    held.write_state({"n": 1})
    assert sink.written == [{"n": 0}]
    assert planned == []
    listing.set_result(frozenset({"1"}))
    held.write_state({"n": 2})
    held.write_state({"n": 3})
    assert sink.written == [{"n": 0}, {"n": 2}, {"n": 3}]
    assert planned == [1]  # once, before the first STATE after the listing

    failed: Future[frozenset[str]] = Future()
    held.hold_until(failed, then=lambda: planned.append(-1))
    failed.set_exception(RuntimeError("the listing failed"))
    held.write_state({"n": 4})
    assert sink.written == [{"n": 0}, {"n": 2}, {"n": 3}]
    assert planned == [1]


def test_copies_of_the_state_share_the_account_ids_and_it_still_encodes_as_json() -> None:
    """The SDK's StateWriter deep-copies every STATE it writes: the ids, O(accounts), are one
    immutable object that a copy shares rather than copies id by id."""
    own: dict[str, t.Any] = {}
    ledger = AccountLedger(own)
    accounts = frozenset(f"1784140000000{n:04d}" for n in range(150))
    for stream in ("media", "users"):
        ledger.cover(stream, accounts)
    copied = copy.deepcopy(own)
    assert copied["accounts"][0]["ids"] is own["accounts"][0]["ids"]
    assert json.loads(json.dumps(own)) == {
        "accounts": [{"streams": ["media", "users"], "ids": sorted(accounts)}],
        "backfills": {},
    }
