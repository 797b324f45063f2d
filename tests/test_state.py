"""STATE is a contract: every released format is read, migrated, and resumed from without loss."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
from taprun import STREAMS, ids, run_tap, tap_config

from tap_analytics import state as tap_state
from tap_analytics.timestamps import epoch

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer

Start = t.Callable[..., "SandboxServer"]
FIXTURES = Path(__file__).with_name("fixtures")
#: The last STATE of a full run of tap-analytics 0.1.0 (format 1), as it printed it.
RELEASE_0_1_0 = json.loads((FIXTURES / "state-0.1.0.json").read_text())


def test_format_1_migrates_to_the_current_format_keeping_every_bookmark() -> None:
    migrated = tap_state.migrate(RELEASE_0_1_0)
    assert tap_state.format_of(RELEASE_0_1_0) == 1
    assert migrated[tap_state.KEY] == {"format": tap_state.FORMAT}
    assert migrated["bookmarks"] == RELEASE_0_1_0["bookmarks"]
    assert tap_state.migrate(migrated) == migrated  # the current format is a fixed point


def test_progress_keys_of_a_killed_sdk_run_are_dropped_and_the_bookmark_kept() -> None:
    killed = {
        "bookmarks": {
            "media": {
                "replication_key": "updated_at",
                "replication_key_value": "2026-01-02T00:00:00+00:00",
                "starting_replication_value": "2026-01-01T00:00:00+00:00",
                "progress_markers": {"Note": "…", "replication_key_value": "x"},
            }
        }
    }
    assert tap_state.migrate(killed)["bookmarks"]["media"] == {
        "replication_key": "updated_at",
        "replication_key_value": "2026-01-02T00:00:00+00:00",
    }


@pytest.mark.parametrize("own", [{"format": "2"}, {"format": 0}, "2"])
def test_an_unreadable_format_is_refused(own: t.Any) -> None:
    with pytest.raises(tap_state.StateFormatError, match=r"tap_analytics\.format"):
        tap_state.migrate({"bookmarks": {}, tap_state.KEY: own})


def test_a_state_from_a_newer_release_ends_the_run_in_one_line(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    newer = {"bookmarks": {}, tap_state.KEY: {"format": tap_state.FORMAT + 1}}
    run = run_tap(tap_config(sandbox), tmp_path, state=newer)
    assert run.returncode == 1
    assert not [m for m in run.messages if m["type"] == "RECORD"]
    errors = [line for line in run.stderr.splitlines() if line.startswith("tap-analytics: error:")]
    assert len(errors) == 1
    assert f"format {tap_state.FORMAT + 1}" in errors[0]
    assert "upgrade tap-analytics" in errors[0]


def test_the_released_state_resumes_reading_only_what_changed_since_its_bookmarks(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run = run_tap(tap_config(sandbox), tmp_path, state=RELEASE_0_1_0)
    assert run.returncode == 0, run.stderr
    assert run.states[0] == tap_state.migrate(RELEASE_0_1_0)
    snapshot = sandbox.snapshot()
    for stream in STREAMS:
        since = epoch(RELEASE_0_1_0["bookmarks"][stream]["replication_key_value"])
        expected = {r["id"] for r in snapshot[stream] if epoch(r["updated_at"]) >= since}
        assert ids(run.records(stream)) == expected, stream
    # Upgrading, every account visible now counts as read whole by every stream (README).
    assert run.last_state[tap_state.KEY] == {
        "format": tap_state.FORMAT,
        "accounts": [{"streams": sorted(STREAMS), "ids": sorted(ids(snapshot["users"]))}],
        "backfills": {},
    }


def test_a_format_1_state_of_this_data_resumes_without_loss(
    start_sandbox: Start, tmp_path: Path
) -> None:
    # The same run as a 0.1.0 user's: a first run, its STATE as 0.1.0 wrote it (no
    # `tap_analytics` part), changes at the API, then a run of this release from that STATE.
    server = start_sandbox(records_per_resource=150, frozen_clock=True)
    first = run_tap(tap_config(server), tmp_path)
    assert first.returncode == 0, first.stderr
    as_released = {"bookmarks": first.last_state["bookmarks"]}
    before = {s: {r["id"]: r for r in records} for s, records in server.snapshot().items()}
    server.mutate(updates=12, inserts=6)
    server.advance_clock(1)

    second = run_tap(tap_config(server), tmp_path, state=as_released)
    assert second.returncode == 0, second.stderr
    for stream, records in server.snapshot().items():
        changed = {r["id"] for r in records if before[stream].get(r["id"]) != r}
        assert ids(second.records(stream)) == changed, stream
