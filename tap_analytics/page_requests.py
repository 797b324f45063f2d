"""A stream's page requests made from one the SDK prepared: from page to page, only the query.

The SDK prepares every request from scratch: a `requests.Request`, the session's merge of its
headers, cookies and hooks, URL parsing and IDNA, then the authenticator re-parsing the query
to append the key. That is about 0.1 ms a page, as much as decoding the page. A stream's page
requests differ only in their query string, so one goes through the SDK and the others are
built from it with their own query: the same URL, headers and hooks, byte for byte (a test
holds the two ways to the same requests).
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlencode

import requests

if t.TYPE_CHECKING:
    from collections.abc import Mapping


def encode_query(params: Mapping[str, t.Any]) -> str:
    """`params` as the SDK's request carries them in its query string.

    As the SDK encodes them (None left out, a list or tuple as the key repeated), and without
    blank values: its authenticator re-parses the query to append the key, which drops them.
    """
    pairs = [
        (name, item)
        for name, value in params.items()
        for item in (value if isinstance(value, (list, tuple)) else (value,))
        if item is not None and str(item) != ""
    ]
    return urlencode(pairs)


class PageRequests:
    """The requests for a stream's pages, copied from one the SDK prepared."""

    def __init__(self, template: requests.PreparedRequest, base_url: str, auth_query: str) -> None:
        self._template = template
        self._base_url = base_url
        #: The authenticator's part of the query (`api_key=…`), after the page's own.
        self._auth_query = auth_query

    @classmethod
    def learn(
        cls, prepared: requests.PreparedRequest, base_url: str, params: Mapping[str, t.Any]
    ) -> PageRequests | None:
        """Requests like `prepared`, the SDK's for `params` at `base_url`; None if it is not one.

        Not one: a body, or a URL other than `base_url?<params>` with the key's parameter after
        them (a base URL with a query of its own, say): the SDK goes on preparing each page.
        """
        query = encode_query(params)
        head = f"{base_url}?{query}" if query else base_url
        url = prepared.url or ""
        if prepared.body is not None or not url.startswith(head):
            return None
        tail = url[len(head) :]
        if not tail:
            return cls(prepared, base_url, "")
        if tail[0] != ("&" if query else "?") or "#" in tail:
            return None
        return cls(prepared, base_url, tail[1:])

    def prepare(self, params: Mapping[str, t.Any]) -> requests.PreparedRequest:
        """The request for the page `params` ask for."""
        template = self._template
        query = "&".join(part for part in (encode_query(params), self._auth_query) if part)
        prepared = requests.PreparedRequest()
        prepared.method = template.method
        prepared.url = f"{self._base_url}?{query}" if query else self._base_url
        # Copied: nothing may change one request's headers under another in flight. The hooks
        # are shared, as PreparedRequest.copy shares them.
        prepared.headers = template.headers.copy()
        prepared.hooks = template.hooks
        return prepared
