"""A full sync against the sandbox: every record, exactly as the reference describes it."""

from __future__ import annotations

import json
import math
import re
import typing as t
from pathlib import Path

import jsonschema
import pytest
from taprun import STREAMS, TapRun, ids, run_tap, tap_config

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")


@pytest.fixture
def full_run(sandbox: SandboxServer, tmp_path: Path) -> TapRun:
    run = run_tap(tap_config(sandbox), tmp_path)
    assert run.returncode == 0, run.stderr
    return run


def test_emits_every_sandbox_record_once(full_run: TapRun, sandbox: SandboxServer) -> None:
    snapshot = sandbox.snapshot()
    for stream in STREAMS:
        emitted = [record["id"] for record in full_run.records(stream)]
        assert len(emitted) == len(set(emitted)), f"{stream}: duplicates in a still run"
        assert set(emitted) == ids(snapshot[stream]), stream


def test_records_keep_every_known_field_and_drop_unknown_ones(
    full_run: TapRun, sandbox: SandboxServer
) -> None:
    schemas = {m["stream"]: m["schema"] for m in full_run.messages if m["type"] == "SCHEMA"}
    for stream, raw_records in sandbox.snapshot().items():
        known = set(schemas[stream]["properties"])
        emitted = {record["id"]: record for record in full_run.records(stream)}
        for raw in raw_records:
            record = emitted[raw["id"]]
            assert set(record) == set(raw) & known
            for name, value in record.items():
                fmt = schemas[stream]["properties"][name].get("format")
                if fmt == "date-time":
                    assert value == raw[name][:-2] + ":" + raw[name][-2:]
                else:
                    assert value == raw[name], (stream, name)


def test_every_record_validates_against_its_schema(full_run: TapRun) -> None:
    schemas = {m["stream"]: m["schema"] for m in full_run.messages if m["type"] == "SCHEMA"}
    checker = jsonschema.Draft7Validator.FORMAT_CHECKER
    for stream in STREAMS:
        validator = jsonschema.Draft7Validator(schemas[stream], format_checker=checker)
        date_times = [
            name
            for name, prop in schemas[stream]["properties"].items()
            if prop.get("format") == "date-time"
        ]
        for record in full_run.records(stream):
            validator.validate(record)
            for name in date_times:
                assert record.get(name) is None or RFC3339_UTC.match(record[name]), record


def test_quirks_survive_the_trip(full_run: TapRun) -> None:
    """Long digit ids stay strings, counters past 2^31 stay exact, captions keep emoji."""
    media = full_run.records("media")
    insights = full_run.records("media_insights") + full_run.records("user_insights")
    assert all(isinstance(r["id"], str) and r["id"].isdigit() for r in media)
    assert max(len(r["id"]) for r in media) >= 19
    assert any(r["impressions"] > 2**31 for r in insights)
    assert any("\n" in (r.get("caption") or "") for r in media)
    assert any(ord(ch) > 0xFFFF for r in media for ch in r.get("caption") or "")
    assert all(":" in r["id"] for r in full_run.records("user_insights"))


def test_messages_come_in_singer_order(full_run: TapRun) -> None:
    schema_seen: set[str] = set()
    for message in full_run.messages:
        if message["type"] == "SCHEMA":
            schema_seen.add(message["stream"])
        elif message["type"] == "RECORD":
            assert message["stream"] in schema_seen, "RECORD before its SCHEMA"
    assert full_run.messages[-1]["type"] == "STATE"
    bookmarks = full_run.last_state["bookmarks"]
    assert set(bookmarks) == set(STREAMS)
    for stream in STREAMS:
        assert bookmarks[stream]["replication_key"] == "updated_at"
        assert RFC3339_UTC.match(bookmarks[stream]["replication_key_value"])


def test_the_run_ends_with_a_summary(full_run: TapRun) -> None:
    assert "Run summary" in full_run.stderr
    assert full_run.summary["records"] == 1050


def test_a_still_run_asks_for_each_page_once_and_nothing_else(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """Pages overlap by one record, the first stream's first page also gives the server's time,
    and no page is asked for twice or past the end; the accounts listing reads each page once."""
    server = start_sandbox(records_per_resource=400, seed=3)
    run = run_tap(tap_config(server, page_size=50), tmp_path)
    assert run.returncode == 0, run.stderr
    snapshot = server.snapshot()
    totals = [len(records) for records in snapshot.values()]
    assert min(totals) > 50
    # The listing's pages overlap too; one more reads the accounts changed while it was read.
    listing = 1 + math.ceil((len(snapshot["users"]) - 50) / 49) + 1
    pages = sum(1 + math.ceil((n - 50) / 49) for n in totals)
    assert server.stats()["requests"] == listing + pages


def test_a_first_page_that_ends_the_window_is_asked_for_again_within_it(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """The first page is read before the window's end is known: a record changed just after
    it could be missing, so when it is also the last page, the tap asks for it again."""
    server = start_sandbox(records_per_resource=30, seed=3)
    run = run_tap(tap_config(server, page_size=50), tmp_path)
    assert run.returncode == 0, run.stderr
    assert max(len(records) for records in server.snapshot().values()) < 50
    assert server.stats()["requests"] == 1 + 2 * len(STREAMS)  # and the accounts listing
    assert sum(len(run.records(stream)) for stream in STREAMS) == sum(
        len(records) for records in server.snapshot().values()
    )


@pytest.mark.parametrize("page_size", [2, 7])
def test_small_pages_with_ties_still_read_everything(
    sandbox: SandboxServer, tmp_path: Path, page_size: int
) -> None:
    run = run_tap(tap_config(sandbox, page_size=page_size, max_concurrency=3), tmp_path)
    assert run.returncode == 0, run.stderr
    snapshot = sandbox.snapshot()
    for stream in STREAMS:
        assert ids(run.records(stream)) == ids(snapshot[stream]), stream


def test_user_ids_reads_only_those_accounts(sandbox: SandboxServer, tmp_path: Path) -> None:
    snapshot = sandbox.snapshot()
    chosen = sorted(ids(snapshot["users"]))[:2]
    run = run_tap(tap_config(sandbox, user_ids=chosen), tmp_path)
    assert run.returncode == 0, run.stderr
    assert ids(run.records("users")) == set(chosen)
    expected_media = {r["id"] for r in snapshot["media"] if r["user_id"] in chosen}
    assert expected_media
    assert ids(run.records("media")) == expected_media


def test_key_in_a_header_works_too(sandbox: SandboxServer, tmp_path: Path) -> None:
    run = run_tap(tap_config(sandbox, api_key_location="header"), tmp_path)
    assert run.returncode == 0, run.stderr
    assert ids(run.records("users")) == ids(sandbox.snapshot()["users"])


def test_start_date_bounds_the_first_run(sandbox: SandboxServer, tmp_path: Path) -> None:
    media = sandbox.snapshot()["media"]
    start = sorted(r["updated_at"] for r in media)[len(media) // 2]
    run = run_tap(tap_config(sandbox, start_date=start.replace("+0000", "Z")), tmp_path)
    assert run.returncode == 0, run.stderr
    assert ids(run.records("media")) == {r["id"] for r in media if r["updated_at"] >= start}


def test_deselected_fields_and_stream_maps_take_the_sdks_record_path(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    discovered = run_tap(tap_config(sandbox), tmp_path, "--discover")
    catalog = json.loads(discovered.stdout)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if entry["tap_stream_id"] == "media" and item["breadcrumb"] == [
                "properties",
                "caption",
            ]:
                item["metadata"]["selected"] = False
            elif not item["breadcrumb"]:
                item["metadata"]["selected"] = entry["tap_stream_id"] in {"media", "users"}
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    maps = {"users": {"handle": "'@' + username", "__key_properties__": ["id"]}}
    run = run_tap(tap_config(sandbox, stream_maps=maps), tmp_path, "--catalog", str(catalog_file))
    assert run.returncode == 0, run.stderr
    snapshot = sandbox.snapshot()
    media = run.records("media")
    assert ids(media) == ids(snapshot["media"])
    assert all("caption" not in record for record in media)
    users = {record["id"]: record for record in run.records("users")}
    assert set(users) == ids(snapshot["users"])
    for raw in snapshot["users"]:
        assert users[raw["id"]]["handle"] == "@" + raw["username"]
    assert not run.records("stories")
    bookmarks = run.last_state["bookmarks"]
    assert set(bookmarks) >= {"media", "users"}
