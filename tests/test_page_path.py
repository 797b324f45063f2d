"""The page path stands in for the SDK's record loop only where nothing needs the loop's hooks."""

from __future__ import annotations

import json
import typing as t

from taprun import ids
from typing_extensions import override

from tap_analytics import streams
from tap_analytics.client import AnalyticsStream
from tap_analytics.sandbox import API_KEY
from tap_analytics.tap import STREAM_TYPES, TapAnalytics

if t.TYPE_CHECKING:
    import pytest

    from tap_analytics.sandbox import SandboxServer


class TaggedMedia(streams.MediaStream):
    """What a newcomer writes: a post_process hook that edits each record."""

    @override
    def post_process(self, row: dict[str, t.Any], context: t.Any = None) -> dict[str, t.Any] | None:
        if row["comments_count"] % 2:
            return None  # drops records, which the page path cannot know about
        return {**row, "caption": "tagged"}


class TapWithTaggedMedia(TapAnalytics):
    @override
    def discover_streams(self) -> list[AnalyticsStream]:
        types = [TaggedMedia if s is streams.MediaStream else s for s in STREAM_TYPES]
        return [stream_type(self, resources=self) for stream_type in types]


def test_an_overridden_post_process_is_applied_to_every_record(
    sandbox: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tap = TapWithTaggedMedia(config={"api_key": API_KEY, "api_url": sandbox.url})
    assert not tap.streams["media"].writes_pages_whole()
    assert tap.streams["stories"].writes_pages_whole()
    tap.sync_all()
    messages = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    media = [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == "media"]
    kept = [r for r in sandbox.snapshot()["media"] if r["comments_count"] % 2 == 0]
    assert media
    assert ids(media) == ids(kept)
    assert {record["caption"] for record in media} == {"tagged"}
