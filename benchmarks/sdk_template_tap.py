"""A plain singer-sdk tap for the Analytics API, written the way the SDK's cookiecutter suggests.

    python benchmarks/sdk_template_tap.py --config config.json > /dev/null

This is the "plain SDK tap" that tap-analytics is compared with: one `RESTStream` base class
with `records_jsonpath`, an `OffsetPaginator` subclass, the `APIKeyAuthenticator`, the default
`SingerWriter`, one request in flight, streams synced one after another by the SDK's own loop
(records conformed, state incremented and written one record at a time). Like tap-analytics it
is incremental on `updated_at` (the API sorts by it, hence `is_sorted`). The schemas are the
tap's own, imported from `tap_analytics.streams`, so both taps emit the same fields.

Deliberately left as the template has it: `response.json()` is decoded twice per page (once by
the paginator, once by `parse_response`), and there is no window, slicing or retry tuning.
"""

from __future__ import annotations

import typing as t

from singer_sdk import RESTStream, Tap
from singer_sdk import typing as th
from singer_sdk.authenticators import APIKeyAuthenticator
from singer_sdk.helpers.jsonpath import extract_jsonpath
from singer_sdk.pagination import OffsetPaginator

from tap_analytics import streams as analytics

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    import requests
    from singer_sdk.helpers.types import Context

PAGE_SIZE = 100


class AnalyticsPaginator(OffsetPaginator):
    """Offset paging: the last page is the first one with fewer than `limit` records."""

    def has_more(self, response: requests.Response) -> bool:
        return len(response.json()["data"]) == self.page_size


class TemplateStream(RESTStream):
    """The template's `client.py`: base URL, auth, headers, paging, URL params, parsing."""

    records_jsonpath = "$.data[*]"
    primary_keys: t.ClassVar[list[str]] = ["id"]
    replication_key = "updated_at"
    is_sorted = True

    @property
    def url_base(self) -> str:
        return self.config["api_url"].rstrip("/")

    @property
    def authenticator(self) -> APIKeyAuthenticator:
        return APIKeyAuthenticator(key="X-API-Key", value=self.config["api_key"], location="header")

    @property
    def http_headers(self) -> dict:
        return {}

    def get_new_paginator(self) -> AnalyticsPaginator:
        return AnalyticsPaginator(start_value=0, page_size=PAGE_SIZE)

    def get_url_params(self, context: Context | None, next_page_token: t.Any | None) -> dict:
        params: dict[str, t.Any] = {"limit": PAGE_SIZE, "offset": next_page_token or 0}
        if start := self.get_starting_replication_key_value(context):
            params["updated_since"] = start
        return params

    def parse_response(self, response: requests.Response) -> Iterable[dict]:
        yield from extract_jsonpath(self.records_jsonpath, input=response.json())

    def post_process(self, row: dict, context: Context | None = None) -> dict | None:
        return row


def _stream(source: type[analytics.AnalyticsStream]) -> type[TemplateStream]:
    """The template's `streams.py` entry for one resource, with the tap's schema."""
    attributes = {"name": source.name, "path": source.path, "schema": source.schema}
    return type(source.__name__, (TemplateStream,), attributes)


STREAM_TYPES = [
    _stream(source)
    for source in (
        analytics.UsersStream,
        analytics.MediaStream,
        analytics.StoriesStream,
        analytics.MediaInsightsStream,
        analytics.StoryInsightsStream,
        analytics.UserInsightsStream,
        analytics.UserLifetimeInsightsStream,
    )
]


class TapSdkTemplate(Tap):
    """The template's `tap.py`."""

    name = "tap-sdk-template"

    config_jsonschema = th.PropertiesList(
        th.Property("api_key", th.StringType, required=True, secret=True),
        th.Property("api_url", th.StringType, required=True),
    ).to_dict()

    def discover_streams(self) -> list[TemplateStream]:
        return [stream_type(tap=self) for stream_type in STREAM_TYPES]


if __name__ == "__main__":
    TapSdkTemplate.cli()
