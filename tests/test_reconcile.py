"""Reconciliation runs: a full read as a new table version, activated only when whole, that never
leaves a live row out of the version it activates."""

from __future__ import annotations

import itertools
import json
import signal
import typing as t
from pathlib import Path

from taprun import STREAMS, TapRun, ids, run_tap, run_tap_until_killed, select_streams, tap_config

from tap_analytics.timestamps import epoch, rfc3339

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer

Start = t.Callable[..., "SandboxServer"]
RECONCILE = {"reconcile_deletes": True}


def activated(run: TapRun) -> dict[str, int]:
    """The version each stream's ACTIVATE_VERSION activated."""
    return {m["stream"]: m["version"] for m in run.messages if m["type"] == "ACTIVATE_VERSION"}


def version_ids(run: TapRun, stream: str, version: int) -> set[str]:
    """Ids of the stream's RECORDs of table `version`."""
    return {
        m["record"]["id"]
        for m in run.messages
        if m["type"] == "RECORD" and m["stream"] == stream and m.get("version") == version
    }


def assert_no_live_row_flagged(
    run: TapRun, server: SandboxServer, loaded: dict[str, set[str]] | None = None
) -> None:
    """A target flags rows it holds that are not in the version: none of them may be live.

    It holds what earlier runs `loaded` (by default: every record live now, as when nothing
    changed) and this run's records. A record inserted during the run and missing from the
    version is in no table yet: the next run loads it.
    """
    snapshot = server.snapshot()
    for stream, version in activated(run).items():
        live = ids(snapshot[stream])
        held = live if loaded is None else loaded[stream] | ids(run.records(stream))
        assert live & held <= version_ids(run, stream, version), stream


def assert_activate_follows_its_records(run: TapRun) -> None:
    for stream, version in activated(run).items():
        positions = [
            n
            for n, m in enumerate(run.messages)
            if m.get("stream") == stream and m["type"] in {"RECORD", "ACTIVATE_VERSION"}
        ]
        assert run.messages[positions[-1]]["type"] == "ACTIVATE_VERSION", stream
        assert run.messages[positions[-1]]["version"] == version


def test_a_reconciliation_activates_a_version_holding_every_live_record_after_its_records(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    first = run_tap(tap_config(server), tmp_path)
    server.mutate(updates=10, inserts=5, deletes=8)
    server.advance_clock(1)

    run = run_tap(tap_config(server, **RECONCILE), tmp_path, state=first.last_state)
    assert run.returncode == 0, run.stderr
    versions = activated(run)
    assert set(versions) == set(STREAMS)
    clock_ms = int(epoch(server.now_iso()) * 1000)
    assert set(versions.values()) == {clock_ms}  # the API's clock, not this machine's
    assert_activate_follows_its_records(run)
    snapshot = server.snapshot()
    for stream in STREAMS:
        assert version_ids(run, stream, clock_ms) == ids(snapshot[stream]), stream
    summary = {s["stream"]: s for s in run.summary["streams"]}
    assert summary["media"]["version_records"] == len(snapshot["media"])
    assert summary["media"]["version_activated"] is True


def test_the_run_after_a_reconciliation_is_incremental_and_versions_only_grow(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=80, frozen_clock=True)
    reconciled = run_tap(tap_config(server, **RECONCILE), tmp_path)
    assert reconciled.returncode == 0, reconciled.stderr
    server.mutate(updates=3)
    server.advance_clock(1)
    nightly = run_tap(tap_config(server), tmp_path, state=reconciled.last_state)
    assert nightly.returncode == 0, nightly.stderr
    assert not activated(nightly)
    assert sum(len(nightly.records(s)) for s in STREAMS) <= 3 * 2  # an update and its insight
    assert all("version" not in m for m in nightly.messages if m["type"] == "RECORD")

    # Two reconciliations within one second of the API's clock still get distinct versions.
    again = run_tap(tap_config(server, **RECONCILE), tmp_path, state=nightly.last_state)
    once_more = run_tap(tap_config(server, **RECONCILE), tmp_path, state=again.last_state)
    first_version = activated(reconciled)["media"]
    assert first_version < activated(again)["media"] < activated(once_more)["media"]


def test_rows_loaded_before_start_date_moved_forward_stay_in_the_version(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    times = sorted(r["updated_at"] for r in server.snapshot()["media"])
    first = run_tap(tap_config(server, start_date="2000-01-01T00:00:00Z"), tmp_path)
    assert first.returncode == 0, first.stderr
    moved = {"start_date": rfc3339(times[len(times) // 2])}
    server.advance_clock(1)
    nightly = run_tap(tap_config(server, **moved), tmp_path, state=first.last_state)
    run = run_tap(tap_config(server, **moved, **RECONCILE), tmp_path, state=nightly.last_state)
    assert run.returncode == 0, run.stderr
    assert_no_live_row_flagged(run, server)
    assert set(activated(run)) == set(STREAMS)


def test_a_reconciliation_that_fails_half_way_activates_no_stream_it_did_not_finish(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=300, frozen_clock=True)
    first = run_tap(tap_config(server, page_size=20), tmp_path)
    config = tap_config(server, page_size=20, max_retries=1, **RECONCILE)
    records = itertools.count(1)

    def the_api_fails_half_way(line: bytes) -> bool:
        if line.startswith(b'{"type":"RECORD"') and next(records) == 7 * 300 // 2:
            server.configure(fault_rate=1.0, faults=["500"])
        return False

    run = run_tap_until_killed(config, tmp_path, the_api_fails_half_way, first.last_state)
    assert run.returncode == 1
    summary = {s["stream"]: s for s in run.summary["streams"]}
    assert {s for s, v in summary.items() if v["status"] != "ok"}, "no stream failed"
    assert set(activated(run)) == {s for s, v in summary.items() if v["status"] == "ok"}
    assert_no_live_row_flagged(run, server)
    for stream, stats in summary.items():
        if stats["status"] != "ok":  # its nightly bookmark did not move
            bookmarks = run.last_state["bookmarks"][stream]
            assert bookmarks == first.last_state["bookmarks"][stream], stream


def test_a_killed_reconciliation_activates_nothing_unfinished_and_the_next_starts_over(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=300, frozen_clock=True, latency_ms=5)
    config = tap_config(server, page_size=20, **RECONCILE)
    records = itertools.count(1)

    def mid_way(line: bytes) -> bool:
        return line.startswith(b'{"type":"RECORD"') and next(records) >= 7 * 300 // 2

    killed = run_tap_until_killed(config, tmp_path, mid_way)
    assert killed.returncode == -signal.SIGKILL
    assert set(activated(killed)) < set(STREAMS)
    assert_no_live_row_flagged(killed, server)

    server.advance_clock(1)
    resumed = run_tap(config, tmp_path, state=killed.last_state)
    assert resumed.returncode == 0, resumed.stderr
    assert set(activated(resumed)) == set(STREAMS)
    assert min(activated(resumed).values()) > max(activated(killed).values(), default=0)
    assert_no_live_row_flagged(resumed, server)


def test_data_changing_during_a_reconciliation_flags_no_live_row(
    start_sandbox: Start, tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=300)
    first = run_tap(tap_config(server, page_size=20), tmp_path)
    assert first.returncode == 0, first.stderr
    loaded = {stream: ids(first.records(stream)) for stream in STREAMS}
    server.configure(mutate_every=3, mutate_updates=2, mutate_inserts=1, mutate_deletes=2)
    before = server.snapshot()
    run = run_tap(tap_config(server, page_size=20, **RECONCILE), tmp_path, state=first.last_state)
    assert run.returncode == 0, run.stderr
    assert server.snapshot() != before, "nothing changed during the read"
    # The catch-up reads faster than the data changes: it reaches the end, every stream's
    # version is activated, and none leaves out a row earlier runs loaded that is still live.
    assert set(activated(run)) == set(STREAMS)
    assert_no_live_row_flagged(run, server, loaded)


def test_a_reconciliation_whose_data_never_rests_activates_nothing(
    start_sandbox: Start, tmp_path: Path
) -> None:
    # Every request adds more records to each resource than a catch-up page moves on.
    server = start_sandbox(records_per_resource=30)
    config = tap_config(server, page_size=2, **RECONCILE)
    only_media = select_streams(config, tmp_path, ["media"])
    server.configure(mutate_every=1, mutate_updates=0, mutate_inserts=14, mutate_deletes=0)
    run = run_tap(config, tmp_path, "--catalog", str(only_media))
    assert run.returncode == 0, run.stderr
    assert not activated(run)
    assert "no version is activated and no row flagged" in run.stderr


def test_reconcile_deletes_with_user_ids_is_refused_in_one_line(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run = run_tap(tap_config(sandbox, user_ids=["1"], **RECONCILE), tmp_path)
    assert run.returncode != 0
    assert "reconcile_deletes: cannot be combined with user_ids" in run.stderr
    assert sandbox.stats()["requests"] == 0


def test_a_full_table_stream_is_reconciled_on_every_run(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    config = tap_config(sandbox)
    catalog_file = select_streams(config, tmp_path, ["media", "stories"])
    catalog = json.loads(catalog_file.read_text())
    for entry in catalog["streams"]:
        if entry["tap_stream_id"] == "media":
            entry["replication_method"] = "FULL_TABLE"
            for item in entry["metadata"]:
                if not item["breadcrumb"]:
                    item["metadata"]["forced-replication-method"] = "FULL_TABLE"
    catalog_file.write_text(json.dumps(catalog))
    first = run_tap(config, tmp_path, "--catalog", str(catalog_file))
    second = run_tap(config, tmp_path, "--catalog", str(catalog_file), state=first.last_state)
    for run in (first, second):
        assert run.returncode == 0, run.stderr
        assert set(activated(run)) == {"media"}
        assert ids(run.records("media")) == ids(sandbox.snapshot()["media"])
    assert not second.records("stories")
