"""Incremental reads that lose nothing: bookmarks, change during a sync, a killed run."""

from __future__ import annotations

import itertools
import json
import signal
import typing as t
from pathlib import Path

import requests
from taprun import STREAMS, TapRun, ids, merged, run_tap, run_tap_until_killed, tap_config

from tap_analytics.sandbox import API_KEY
from tap_analytics.timestamps import rfc3339

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer

Start = t.Callable[..., "SandboxServer"]


def conformed(raw: dict[str, t.Any], schema_fields: set[str]) -> dict[str, t.Any]:
    """A sandbox record as the tap should emit it."""
    return {
        name: rfc3339(value)
        if name in {"updated_at", "created_at", "timestamp", "expires_at"}
        else value
        for name, value in raw.items()
        if name in schema_fields
    }


def schema_fields(run: TapRun) -> dict[str, set[str]]:
    return {
        m["stream"]: set(m["schema"]["properties"]) for m in run.messages if m["type"] == "SCHEMA"
    }


def test_first_run_bookmarks_the_window_end_and_second_run_reads_only_changes(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    first = run_tap(tap_config(server), tmp_path)
    assert first.returncode == 0, first.stderr
    window_end = rfc3339(server.now_iso())
    for stream in STREAMS:
        assert first.last_state["bookmarks"][stream]["replication_key_value"] == window_end

    before = {
        stream: {r["id"]: r for r in records} for stream, records in server.snapshot().items()
    }
    server.mutate(updates=12, inserts=6)
    server.advance_clock(1)
    changed = {
        stream: {r["id"] for r in records if before[stream].get(r["id"]) != r}
        for stream, records in server.snapshot().items()
    }
    assert sum(map(len, changed.values())) >= 18  # inserts bring their insights along

    second = run_tap(tap_config(server), tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    for stream in STREAMS:
        assert ids(second.records(stream)) == changed[stream], stream


def test_a_revised_daily_figure_is_emitted_again(start_sandbox: Start, tmp_path: Path) -> None:
    server = start_sandbox(records_per_resource=60, frozen_clock=True)
    first = run_tap(tap_config(server), tmp_path)
    server.mutate(updates=3, resources=("user_insights",))
    server.advance_clock(1)
    second = run_tap(tap_config(server), tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    revised = [r for r in second.records("user_insights")]
    assert len(revised) == 3
    fields = schema_fields(second)["user_insights"]
    latest = {r["id"]: conformed(r, fields) for r in server.snapshot()["user_insights"]}
    for record in revised:
        assert record == latest[record["id"]]
        assert record != next(r for r in first.records("user_insights") if r["id"] == record["id"])
    assert all(not second.records(stream) for stream in STREAMS if stream != "user_insights")


def offset_reader(server: SandboxServer, resource: str, page_size: int) -> set[str]:
    """A plain reader that only increments `offset`, as many tools do."""
    seen: set[str] = set()
    offset = 0
    while True:
        page = requests.get(
            f"{server.url}/v1/{resource}",
            params={"offset": offset, "limit": page_size},
            headers={"X-API-Key": API_KEY},
            timeout=10,
        ).json()["data"]
        seen.update(record["id"] for record in page)
        if len(page) < page_size:
            return seen
        offset += page_size


CHANGING = {
    "records_per_resource": 300,
    "frozen_clock": True,
    "mutate_every": 2,
    "mutate_updates": 2,
    "mutate_inserts": 1,
    "mutate_deletes": 3,
}


def untouched_ids(server: SandboxServer, stream: str, run_start: str) -> set[str]:
    """Records present for the whole run: never changed after it began (and not deleted)."""
    return {r["id"] for r in server.snapshot()[stream] if r["updated_at"] < run_start}


def test_records_changing_during_a_sync_all_arrive_by_the_next_run(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(**CHANGING)
    run_start = server.now_iso()
    first = run_tap(tap_config(server, page_size=10), tmp_path)
    assert first.returncode == 0, first.stderr
    assert server.stats()["list_requests"] > 100
    for stream in STREAMS:
        assert untouched_ids(server, stream, run_start) <= ids(first.records(stream)), stream

    server.configure(mutate_every=0)
    server.advance_clock(1)
    second = run_tap(tap_config(server, page_size=10), tmp_path, state=first.last_state)
    assert second.returncode == 0, second.stderr
    fields = schema_fields(first)
    for stream, records in server.snapshot().items():
        loaded = merged([first, second], stream)
        for record in records:
            assert loaded.get(record["id"]) == conformed(record, fields[stream]), stream


def test_a_plain_offset_reader_loses_records_in_the_same_setup(start_sandbox: Start) -> None:
    """The test above can fail: the same changes make an offset-only reader skip records."""
    server = start_sandbox(**CHANGING)
    run_start = server.now_iso()
    missed = {
        stream: untouched_ids(server, stream, run_start) - offset_reader(server, stream, 10)
        for stream in STREAMS
    }
    assert any(missed.values())


def test_a_killed_run_resumes_from_its_last_state_without_loss(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=300, latency_ms=15, frozen_clock=True)
    total = 7 * 300
    records = itertools.count(1)

    def a_third_written(line: bytes) -> bool:
        return line.startswith(b'{"type":"RECORD"') and next(records) >= total // 3

    killed = run_tap_until_killed(tap_config(server, page_size=20), tmp_path, a_third_written)
    assert killed.returncode == -signal.SIGKILL
    emitted = sum(len(killed.records(stream)) for stream in STREAMS)
    assert emitted < total, "the run finished before it was killed"

    resumed = run_tap(tap_config(server, page_size=20), tmp_path, state=killed.last_state)
    assert resumed.returncode == 0, resumed.stderr
    for stream, records in server.snapshot().items():
        assert ids(records) <= ids(killed.records(stream)) | ids(resumed.records(stream)), stream
    resumed_total = sum(len(resumed.records(stream)) for stream in STREAMS)
    assert resumed_total < total, "the resumed run should not start from scratch"
    assert json.dumps(killed.last_state)
