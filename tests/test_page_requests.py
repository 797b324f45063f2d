"""Page requests copied from the first the SDK prepares are the requests the SDK would prepare."""

from __future__ import annotations

import typing as t

import pytest
import requests

from tap_analytics.pagination import WindowCursor
from tap_analytics.sandbox import API_KEY
from tap_analytics.tap import TapAnalytics

if t.TYPE_CHECKING:
    from tap_analytics.client import AnalyticsStream

URL = "http://127.0.0.1:9"
CURSORS = [
    WindowCursor(None, None, 0),
    WindowCursor("2026-11-01T00:00:00+0000", "2026-11-02T08:15:30+0000", 99),
    WindowCursor(None, "2026-11-02T08:15:30+0000", 198, ("17841400000000001", "1784140002")),
    WindowCursor("2026-11-01T00:00:00Z", None, 5, ()),
]
CONFIGS = {
    "key in the query": {},
    "key in a header": {"api_key_location": "header"},
    "user_ids, page size": {"user_ids": ["17841400000000001", "9"], "page_size": 50},
    "user agent": {"user_agent": "acme-loader/2.0 (+ops@example.com)"},
}


def stream(**settings: t.Any) -> AnalyticsStream:
    tap = TapAnalytics(config={"api_key": API_KEY, "api_url": URL, **settings})
    return t.cast("AnalyticsStream", tap.streams["media"])


def as_sent(prepared: requests.PreparedRequest) -> tuple[t.Any, ...]:
    return prepared.method, prepared.url, dict(prepared.headers), prepared.body


@pytest.mark.parametrize("settings", CONFIGS.values(), ids=CONFIGS.keys())
def test_copied_requests_are_the_sdks(settings: dict[str, t.Any]) -> None:
    copier = stream(**settings)
    first = copier._page_request(CURSORS[0])
    assert copier._page_requests is not None, "the first request did not become the template"
    assert as_sent(first) == as_sent(stream(**settings)._page_request(CURSORS[0]))
    for cursor in CURSORS[1:]:
        # A new stream's first request is the SDK's own.
        assert as_sent(copier._page_request(cursor)) == as_sent(
            stream(**settings)._page_request(cursor)
        )


def test_a_session_holding_cookies_gets_the_sdks_requests() -> None:
    copier = stream()
    copier._page_request(CURSORS[0])
    copier.requests_session.cookies.set("lb", "node-2", domain="127.0.0.1", path="/")
    prepared = copier._page_request(CURSORS[1])
    assert prepared.headers.get("Cookie") == "lb=node-2"


def test_copies_share_no_headers() -> None:
    copier = stream()
    copier._page_request(CURSORS[0])
    one, other = copier._page_request(CURSORS[1]), copier._page_request(CURSORS[1])
    one.headers["X-Test"] = "1"
    assert "X-Test" not in other.headers
