"""A page of RECORD messages in one write: each line the message the SDK's encoder would write."""

from __future__ import annotations

import io
import json
import typing as t
from datetime import datetime, timezone

import msgspec
import pytest

from tap_analytics import timestamps
from tap_analytics.writer import PageWriter

NOW = datetime(2026, 11, 1, 8, 15, 30, 123456, tzinfo=timezone.utc)
RECORDS: list[dict[str, t.Any]] = [
    {"id": "1", "caption": 'line one\nline "two"\r\n\\', "updated_at": "2026-11-01T08:15:30+00:00"},
    {"id": "2", "caption": "😀 \u2028 \x00", "children": ["a", "b"], "like_count": None},
    {"id": "3", "nested": {"k": [1, 2.5, True, {"deep": "}\n{"}]}},
]


class Bytes(io.TextIOWrapper):
    """A stdout whose bytes the test reads."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")


@pytest.mark.parametrize("version", [None, 0, 1767225600123])
@pytest.mark.parametrize("stream", ["media", 'odd "name" ✓'])
def test_a_page_is_the_records_messages_in_order(
    monkeypatch: pytest.MonkeyPatch, stream: str, version: int | None
) -> None:
    monkeypatch.setattr(timestamps, "now", lambda: NOW)
    out = Bytes()
    monkeypatch.setattr("sys.stdout", out)
    PageWriter().write_records(stream, [dict(r) for r in RECORDS], version=version)
    written = t.cast("io.BytesIO", out.buffer).getvalue()
    expected = b"".join(
        msgspec.json.encode(
            {
                "type": "RECORD",
                "stream": stream,
                "record": record,
                "time_extracted": NOW.isoformat(),
                **({} if version is None else {"version": version}),
            }
        )
        + b"\n"
        for record in RECORDS
    )
    assert written == expected
    assert [json.loads(line)["record"] for line in written.splitlines()] == RECORDS


def test_an_empty_page_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Bytes()
    monkeypatch.setattr("sys.stdout", out)
    PageWriter().write_records("media", [])
    assert t.cast("io.BytesIO", out.buffer).getvalue() == b""
