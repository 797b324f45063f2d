"""Record conformance: timestamps to RFC 3339, and nothing else touched."""

from __future__ import annotations

import logging

from tap_analytics.records import RecordConformer
from tap_analytics.streams import MediaStream


def test_only_timestamp_fields_change_even_when_a_caption_looks_like_one() -> None:
    caption = 'copy of "updated_at":"2026-01-01T00:00:00+0000" ends +0000'
    record = {
        "id": "17900000000000000001",
        "caption": caption,
        "timestamp": "2026-01-01T00:00:00.5-0130",
        "updated_at": "2026-11-01T08:15:30+0000",
        "media_url": None,
    }
    conformer = RecordConformer("media", MediaStream.schema, logging.getLogger(), strict=False)
    [conformed] = conformer.conform([dict(record)])
    assert conformed == {
        **record,
        "timestamp": "2026-01-01T00:00:00.5-01:30",
        "updated_at": "2026-11-01T08:15:30+00:00",
    }
