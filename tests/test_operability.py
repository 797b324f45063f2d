"""What the person reading the log in the morning sees: progress, summary, drift, --test."""

from __future__ import annotations

import logging
import re
import typing as t
from pathlib import Path

import pytest
from taprun import STREAMS, run_tap, tap_config

from tap_analytics.records import RecordConformer, SchemaDriftError
from tap_analytics.sandbox import NO_LIFETIME_KEY
from tap_analytics.streams import MediaStream

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer


def test_progress_lines_give_records_share_rate_and_time_left(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run = run_tap(tap_config(sandbox, progress_interval=0, page_size=50), tmp_path)
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if "Progress media:" in line]
    assert progress
    assert re.search(r"\d+ records \(\d+% of 150\), \d+ pages, \d+ records/s", progress[0])
    assert "s left" in progress[0]


def test_short_runs_stay_quiet(sandbox: SandboxServer, tmp_path: Path) -> None:
    run = run_tap(tap_config(sandbox), tmp_path)
    assert "Progress" not in run.stderr


def test_summary_counts_records_pages_and_retries_by_cause(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = start_sandbox(
        records_per_resource=100, fault_rate=0.3, faults=("503", "reset"), seed=5
    )
    run = run_tap(tap_config(server, max_retries=10), tmp_path)
    assert run.returncode == 0, run.stderr
    block = run.stderr[run.stderr.index("Run summary") :]
    for stream in STREAMS:
        assert re.search(rf"{stream}\s+ok\s+100\s", block), stream
    assert run.summary["records"] == 700
    retries: dict[str, int] = {}
    for stream in run.summary["streams"]:
        for cause, count in stream["retries"].items():
            retries[cause] = retries.get(cause, 0) + count
    faults = server.stats()["faults"]
    assert faults.get("503")
    assert faults.get("reset")
    assert retries == {"server": faults["503"], "network": faults["reset"]}


def test_a_failed_run_says_so_in_the_summary_and_the_exit_code(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run = run_tap(tap_config(sandbox, api_key=NO_LIFETIME_KEY), tmp_path)
    assert run.returncode == 1
    assert re.search(r"user_lifetime_insights\s+failed", run.stderr)


def test_unknown_fields_are_dropped_with_one_warning_per_stream_and_field(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run = run_tap(tap_config(sandbox), tmp_path)
    assert run.returncode == 0, run.stderr
    expected = set()
    for stream, records in sandbox.snapshot().items():
        schema = next(
            m["schema"] for m in run.messages if m["type"] == "SCHEMA" and m["stream"] == stream
        )
        known = set(schema["properties"])
        expected |= {(stream, name) for record in records for name in set(record) - known}
    assert expected, "the sandbox should send fields the schema does not know"
    warnings = re.findall(r"Schema drift in stream (\w+): the API sent field '(\w+)'", run.stderr)
    assert sorted(warnings) == sorted(expected)


def conformer(*, strict: bool) -> RecordConformer:
    return RecordConformer(
        "media", MediaStream.schema, logging.getLogger("test-drift"), strict=strict
    )


def test_a_null_in_a_non_nullable_field_is_reported_with_record_and_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = [
        {"id": "17900000000000001", "user_id": None, "updated_at": "2026-11-01T08:15:30+0000"},
        {"id": "17900000000000002", "updated_at": "2026-11-01T08:15:31+0000"},
    ]
    with caplog.at_level(logging.WARNING):
        conformed = conformer(strict=False).conform(records)
    assert conformed[0]["updated_at"] == "2026-11-01T08:15:30+00:00"
    messages = [r.getMessage() for r in caplog.records if "user_id" in r.getMessage()]
    assert len(messages) == 1
    assert "record id '17900000000000001'" in messages[0]


def test_strict_turns_a_missing_required_field_into_a_clear_error() -> None:
    with pytest.raises(SchemaDriftError, match=r"record id '17900000000000002'.*'user_id'"):
        conformer(strict=True).conform(
            [{"id": "17900000000000002", "updated_at": "2026-11-01T08:15:31+0000"}]
        )


def test_connection_check_passes_and_fails_like_a_sync(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    good = run_tap(tap_config(sandbox), tmp_path, "--test")
    assert good.returncode == 0, good.stderr
    bad = run_tap(tap_config(sandbox, api_key="wrong"), tmp_path, "--test")
    assert bad.returncode == 1
    assert "tap-analytics: error: stream" in bad.stderr
    assert "HTTP 401 invalid_api_key" in bad.stderr
    assert "Traceback" not in bad.stderr
