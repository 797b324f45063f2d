"""What the seven streams share: auth, requests, retries, the window walk and the record path."""

from __future__ import annotations

import os
import threading
import typing as t
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cached_property
from http import HTTPStatus
from importlib.metadata import version

import backoff
import msgspec
import requests
from singer_sdk import RESTStream, Stream, Tap
from singer_sdk.authenticators import APIKeyAuthenticator
from singer_sdk.exceptions import RetriableAPIError
from singer_sdk.mapper import RemoveRecordTransform, SameRecordTransform
from singer_sdk.singerlib import ActivateVersionMessage
from singer_sdk.streams.rest import PageContext
from typing_extensions import override

from tap_analytics import state as tap_state
from tap_analytics import timestamps, transport
from tap_analytics.errors import APIRequestError, ApiUrlError, RetriesExhaustedError, redactor
from tap_analytics.page_requests import PageRequests
from tap_analytics.pagination import Envelope, WindowCursor, decode_envelope
from tap_analytics.ratelimit import retry_after_seconds
from tap_analytics.records import RecordConformer
from tap_analytics.scheduler import (
    HEDGE_DEFAULT_SECONDS,
    Page,
    PageScheduler,
    StreamReader,
    hedged,
    on_worker,
    request_backing_off,
    request_queued,
    request_sent,
)
from tap_analytics.sdk import SeamStream, record_messages
from tap_analytics.stats import StreamStats, retry_cause

if t.TYPE_CHECKING:
    from tap_analytics.ratelimit import RateLimiter
    from tap_analytics.writer import PageWriter

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from backoff.types import Details
    from singer_sdk.helpers.types import Context, TapState

#: Where to resume after a crash: a STATE message follows every this many pages, so a killed
#: run re-reads at most a few pages; but only once the records written since the last STATE
#: are this many times its size, so that a STATE grown large (the coverage of thousands of
#: accounts) is not most of the output.
STATE_EVERY_PAGES = 5
STATE_SHARE_OF_OUTPUT = 4


class StateSink(t.Protocol):
    """Writes STATE messages (the SDK's StateWriter, which skips a STATE equal to the last)."""

    def write_state(self, state: TapState) -> None:
        """Write `state` as a STATE message if it changed."""


class RunResources(t.Protocol):
    """What the streams use of the tap that runs them (the tap knows its streams, not back)."""

    @property
    def rate_limiter(self) -> RateLimiter:
        """The limiter every request of the run waits on."""

    @property
    def http_sessions(self) -> threading.local:
        """Each worker thread's `requests.Session`."""

    @property
    def page_writer(self) -> PageWriter:
        """The writer of the run's Singer messages."""

    @property
    def max_concurrency(self) -> int:
        """Requests in flight at once."""

    @property
    def state_sink(self) -> StateSink:
        """Where the streams write the run's STATE messages."""


class AnalyticsStream(SeamStream[WindowCursor]):
    """A list endpoint of the Analytics API, read incrementally on `updated_at`."""

    primary_keys: t.ClassVar[list[str]] = ["id"]
    replication_key = "updated_at"
    is_sorted = True
    records_jsonpath = "$.data[*]"

    def __init__(self, tap: Tap, *, resources: RunResources) -> None:
        super().__init__(tap)
        self.resources = resources
        self._units: Iterable[ReadUnit] | None = None
        #: Page requests copied from the first the SDK prepares (_page_request).
        self._page_requests: PageRequests | None = None

    def read_from(self, units: Iterable[ReadUnit]) -> None:
        """Write this run's pages from `units` (its own window first), on the tap's scheduler.

        `units` may be lazy: later units (backfills) can wait on what the run learns meanwhile.
        """
        self._units = units

    def own_window(self, reader: StreamReader) -> ReadUnit:
        """The unit of the stream's own window: its bookmark follows the pages written."""
        return ReadUnit(reader.pages(), self.set_bookmark)

    def set_bookmark(self, bookmark: str) -> None:
        """Everything before `bookmark` is written: the next run starts there."""
        stream_state = self.stream_state
        stream_state["replication_key"] = self.replication_key
        stream_state["replication_key_value"] = bookmark

    @override
    def get_replication_key_signpost(self, context: Context | None = None) -> None:
        # The SDK caps bookmarks at this machine's clock; here windows end at the API's.
        return None

    @property
    @override
    def emit_activate_version_messages(self) -> bool:
        # The SDK would write ACTIVATE_VERSION before a FULL_TABLE stream's records, flagging
        # every row until they come again; reconciliations write it after (activate_version).
        return False

    def activate_version(self, version: int) -> None:
        """Write ACTIVATE_VERSION for every alias this stream's records went out under."""
        for stream_map in self.stream_maps:
            if not isinstance(stream_map, RemoveRecordTransform):
                message = ActivateVersionMessage(stream=stream_map.stream_alias, version=version)
                self.resources.page_writer.write_message(message)

    @property
    @override
    def url_base(self) -> str:
        return str(self.config["api_url"]).rstrip("/")

    @cached_property
    @override
    def authenticator(self) -> APIKeyAuthenticator:
        in_header = self.config.get("api_key_location") == "header"
        return APIKeyAuthenticator(
            key="X-API-Key" if in_header else "api_key",
            value=self.config["api_key"],
            location="header" if in_header else "params",
        )

    @cached_property
    @override
    def user_agent(self) -> str:
        return self.config.get("user_agent") or f"tap-analytics/{version('tap-analytics')}"

    @property
    @override
    def requests_session(self) -> requests.Session:
        # One session per worker thread, shared by all streams: requests does not promise that
        # a Session is thread-safe, and each keeps its own keep-alive connection.
        sessions = self.resources.http_sessions
        session = getattr(sessions, "session", None)
        if session is None:
            session = sessions.session = requests.Session()
            # requests re-reads proxy settings from the environment on every send, which cost
            # more than parsing the page; they are read once here instead.
            session.proxies = requests.utils.get_environ_proxies(self.url_base)
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            # Only TLS reads the bundle; requests looks the path up on every send regardless.
            if bundle and self.url_base.lower().startswith("https:"):
                session.verify = bundle
            session.trust_env = False
        return session

    @property
    def request_timeout(self) -> float:
        """Seconds to wait for a response (the SDK's `timeout` says int; requests takes any)."""
        return float(self.config.get("request_timeout", 30))

    @property
    def page_size(self) -> int:
        """Records per request: at least 2, as the window walk overlaps pages by one record."""
        return max(2, int(self.config.get("page_size", 100)))

    @cached_property
    def stats(self) -> StreamStats:
        """Counters for the run summary."""
        return StreamStats(self.name, float(self.config.get("progress_interval", 10)))

    @cached_property
    def conformer(self) -> RecordConformer:
        """Conforms this stream's records to its schema, a page at a time."""
        return RecordConformer(
            self.name, self.schema, self.logger, strict=bool(self.config.get("strict", False))
        )

    @override
    def get_url_params(
        self, context: Context | None, next_page_token: WindowCursor | None
    ) -> dict[str, t.Any]:
        params: dict[str, t.Any] = {"limit": self.page_size}
        # The window's upper end is sent with every page: records changed during the run stay
        # out. Only the request that learns it goes without (fetch_page_and_clock).
        if next_page_token is not None:
            params["offset"] = next_page_token.offset
            if next_page_token.updated_since is not None:
                params["updated_since"] = timestamps.api_form(next_page_token.updated_since)
            if next_page_token.updated_until is not None:
                params["updated_until"] = timestamps.api_form(next_page_token.updated_until)
        accounts = next_page_token.accounts if next_page_token is not None else None
        if accounts := accounts or self.config.get("user_ids"):
            params["user_id"] = ",".join(accounts)
        return params

    def window_start(self) -> str | None:
        """Where this run's window starts: the bookmark or `start_date`, the later; else nowhere."""
        starts = [
            value
            for value in (
                tap_state.bookmark(self.tap_state, self.name),
                self.config.get("start_date"),
            )
            if value
        ]
        return timestamps.api_form(max(starts, key=timestamps.epoch)) if starts else None

    # Requests -----------------------------------------------------------------------------

    def fetch_page(self, cursor: WindowCursor) -> Envelope:
        """Fetch and decode one page, retrying transient failures; safe to call from threads."""
        envelope, _ = self._fetch_page(cursor)
        return envelope

    def fetch_page_and_clock(self, cursor: WindowCursor) -> tuple[Envelope, str]:
        """One page, and the API's clock when it answered (its `Date` header).

        A window ends at the API's clock, which stamps `updated_at`, not at ours, so that a
        skewed local clock cannot put a record changed during the run inside the window being
        read; a reconciliation's version comes from it too. Without a `Date`, our clock serves.
        """
        envelope, headers = self._fetch_page(cursor)
        try:
            server_now = parsedate_to_datetime(headers["Date"])
        except (KeyError, TypeError, ValueError):
            server_now = timestamps.now()
        return envelope, timestamps.api_form(server_now)

    def _fetch_page(self, cursor: WindowCursor) -> tuple[Envelope, t.Mapping[str, str]]:
        page = self._fetch(self._page_request(cursor))
        self.stats.count_page()
        return page

    def _page_request(self, cursor: WindowCursor) -> requests.PreparedRequest:
        """The request for the page `cursor` asks for.

        The SDK prepares the first; later ones are copied from it with their own query
        (page_requests says why). The SDK prepares again while the session holds cookies,
        which it would send: the API sets none, but something in front of it may.
        """
        page_requests = self._page_requests
        if page_requests is not None and not self.requests_session.cookies:
            return page_requests.prepare(self.get_url_params(None, cursor))
        http_request = self.get_http_request(page=PageContext(None, cursor))
        try:
            prepared = self.build_prepared_request(
                method=http_request.method,
                url=http_request.url,
                params=http_request.encode_params(),
                headers={**http_request.headers, "Accept-Encoding": "gzip"},
            )
        except requests.RequestException as exc:  # an invalid URL or header: nothing was sent
            problem = transport.fatal_exception(exc) or redactor.redact(str(exc))
            raise ApiUrlError(self.name, self.url_base, problem) from None
        # Copies stand in only for the SDK's own request building: a stream that builds its
        # requests otherwise keeps the SDK's path.
        if (
            page_requests is None
            and type(self).get_http_request is RESTStream.get_http_request
            and not self.requests_session.cookies
        ):
            self._page_requests = PageRequests.learn(
                prepared, http_request.url, http_request.params
            )
        return prepared

    def _fetch(self, prepared: requests.PreparedRequest) -> tuple[Envelope, t.Mapping[str, str]]:
        try:
            if on_worker():
                return self._send_with_retries(prepared)
            # Outside the scheduler (the accounts listing) a stall would stop the whole run.
            return hedged(
                lambda: self._send_with_retries(prepared),
                lambda: self._send_with_retries(prepared.copy()),
                HEDGE_DEFAULT_SECONDS,
            )
        except (RetriableAPIError, requests.RequestException) as exc:
            raise RetriesExhaustedError(self.name, self.backoff_max_tries(), str(exc)) from None

    @cached_property
    def _send_with_retries(
        self,
    ) -> t.Callable[[requests.PreparedRequest], tuple[Envelope, t.Mapping[str, str]]]:
        return self.request_decorator(self._send)

    def _send(self, prepared: requests.PreparedRequest) -> tuple[Envelope, t.Mapping[str, str]]:
        limiter = self.resources.rate_limiter
        # Waiting for the limiter is not latency: the scheduler hedges only on time sent.
        request_queued()
        limiter.acquire()
        request_sent()
        self.stats.count_request()
        try:
            # Redirects are not followed: validate_response refuses them (transport says why).
            response = self.requests_session.send(
                prepared, timeout=self.request_timeout, allow_redirects=False, stream=True
            )
        except transport.SEND_ERRORS as exc:
            limiter.release(None)
            raise self._send_error(exc) from None
        limiter.release(response.headers)
        with response:  # an error answer's connection is closed unless its body was read
            self.validate_response(response)
            try:
                body = transport.read_body(response)
            except requests.RequestException as exc:
                raise self._send_error(exc) from None
        if problem := transport.not_json(response, body):
            raise ApiUrlError(self.name, self.url_base, problem)
        try:
            return decode_envelope(body), response.headers
        except msgspec.ValidationError as exc:  # JSON, whole, but not a list response
            problem = transport.not_an_envelope(response.status_code, str(exc))
            raise ApiUrlError(self.name, self.url_base, problem) from None
        except msgspec.DecodeError:
            msg = f"HTTP {response.status_code} with a malformed JSON body (cut off?)"
            raise RetriableAPIError(msg, response) from None

    def _send_error(self, exc: Exception) -> Exception:
        """What to raise for a failed send or read: fatal ones as such, the rest retried."""
        if problem := transport.fatal_exception(exc):
            return ApiUrlError(self.name, self.url_base, problem)
        # requests puts the full URL, query string and key included, into its messages.
        return type(exc)(redactor.redact(str(exc)))

    @override
    def validate_response(self, response: requests.Response) -> None:
        status = response.status_code
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            self.resources.rate_limiter.pause(
                retry_after_seconds(response.headers.get("Retry-After"))
            )
            raise RetriableAPIError("HTTP 429 rate_limited (Retry-After honoured)", response)
        if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            content_type = response.headers.get("Content-Type", "")
            kind = "an HTML page from a proxy" if "html" in content_type else "a server error"
            raise RetriableAPIError(f"HTTP {status} with {kind}", response)
        if status >= HTTPStatus.BAD_REQUEST:
            raise APIRequestError.from_response(self.name, response)
        if problem := transport.fatal_response(response):
            raise ApiUrlError(self.name, self.url_base, problem)

    @override
    def request_decorator(self, func: t.Callable[..., t.Any]) -> t.Callable[..., t.Any]:
        # The SDK's decorator also hands backoff our logger, which then logs every retry a
        # second time, with the decorated function's arguments; backoff_handler says it once.
        return backoff.on_exception(
            self.backoff_wait_generator,
            (RetriableAPIError, requests.RequestException),
            max_tries=self.backoff_max_tries,
            on_backoff=self.backoff_handler,
            jitter=self.backoff_jitter,
            logger=None,
        )(func)

    @override
    def backoff_wait_generator(self) -> t.Generator[float, None, None]:
        return backoff.expo(base=2, factor=0.25, max_value=30)

    @override
    def backoff_max_tries(self) -> int:
        return int(self.config.get("max_retries", 8)) + 1

    @override
    def backoff_handler(self, details: Details) -> None:
        exc = details.get("exception")
        failure = exc if isinstance(exc, BaseException) else None
        self.stats.count_retry(failure)
        if retry_cause(failure) == "rate_limited":
            # It waits out Retry-After, as every worker does: that is not latency, and a copy
            # sent meanwhile would only spend one more request of the window.
            request_queued()
        else:
            request_backing_off()
        self.logger.warning(
            "stream %s: retrying in %.1f s after %s (attempt %d of %d)",
            self.name,
            details.get("wait", 0.0),
            redactor.redact(str(exc)) or type(exc).__name__,
            details.get("tries", 0),
            self.backoff_max_tries(),
        )

    # Records ------------------------------------------------------------------------------

    def pages(self) -> Iterator[Page]:
        """This stream's own window, in `updated_at` order (the SDK's record loop reads it).

        In the tap's sync the pages come from the reader it handed over (`read_from`). Where
        the SDK drives the stream alone (its dry run behind `--test`), the stream reads on a
        scheduler of its own.
        """
        if self._units is not None:
            yield from self._counted(next(iter(self._units)))
            return
        with PageScheduler(self.resources.max_concurrency) as scheduler:
            yield from self._counted(self.own_window(scheduler.open(self)))

    def _counted(self, unit: ReadUnit) -> Iterator[Page]:
        for page in unit.pages:
            yield page
            self.stats.count_records(len(page.records), self.logger, backfill=unit.backfill)

    @override
    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        for page in self.pages():
            yield from page.records

    # What the scheduler asks of a stream (scheduler.PageSource) --------------------------

    def conform(self, records: list[dict[str, t.Any]]) -> list[dict[str, t.Any]]:
        """Conform a page of records to the schema."""
        return self.conformer.conform(records)

    def expect_records(self, total: int | None) -> None:
        """The API's count of records in a window of this run, for progress lines."""
        if total is not None:
            self.stats.expected_records = (self.stats.expected_records or 0) + total

    # The page path (sdk.SeamStream) -------------------------------------------------------

    @override
    def writes_pages(self) -> bool:
        # The SDK's dry run (`--test`) stops after a few records: its own loop does that.
        return self.ABORT_AT_RECORD_COUNT is None

    def writes_pages_whole(self) -> bool:
        """Whether nothing asks for per-record handling: the page goes out in one write.

        Stream maps, deselected fields and an overridden post_process need each record.
        """
        maps = self.stream_maps
        return (
            type(self).post_process is Stream.post_process
            and len(maps) == 1
            and type(maps[0]) is SameRecordTransform
            and maps[0].stream_alias == self.name
            and all(self.mask.get(("properties", name), True) for name in self.schema["properties"])
        )

    @override
    def write_pages(self) -> None:
        # Pages are conformed once by the conformer and, unless a record needs the SDK's
        # per-record handling, written with one encode and one flush: most of the tap's
        # speed. Each unit (the stream's window, then its backfills) is written whole, in
        # order; STATE follows every few pages and claims only what has been written.
        if self._units is None:
            with PageScheduler(self.resources.max_concurrency) as scheduler:
                self._units = [self.own_window(scheduler.open(self))]
                self.write_pages()
            return
        whole = self.writes_pages_whole()
        state_writer = self.resources.state_sink
        writer = self.resources.page_writer
        pages_since_state, bytes_at_state = 0, writer.bytes_written
        with self.get_record_counter() as counter, self.get_sync_timer():
            for unit in self._units:
                for page in self._counted(unit):
                    if page.records:
                        written = self._write_records(page.records, unit.version, whole=whole)
                        counter.increment(written)
                        if unit.version is not None:
                            self.stats.version_records += written
                    unit.written(page.bookmark)
                    pages_since_state += 1
                    written_since = writer.bytes_written - bytes_at_state
                    if (
                        pages_since_state >= STATE_EVERY_PAGES
                        and written_since >= STATE_SHARE_OF_OUTPUT * writer.state_bytes
                    ):
                        state_writer.write_state(self.tap_state)
                        pages_since_state, bytes_at_state = 0, writer.bytes_written
                unit.finished()
                state_writer.write_state(self.tap_state)

    def _write_records(
        self, records: list[dict[str, t.Any]], version: int | None, *, whole: bool
    ) -> int:
        """Write a page's RECORD messages; return how many records were written."""
        writer = self.resources.page_writer
        if whole:
            writer.write_records(self.name, records, version=version)
            return len(records)
        written = 0
        for record in records:
            row = self.post_process(record, None)
            if row is not None:
                for message in record_messages(self, row):
                    message.version = version
                    writer.write_message(message)
                written += 1
        return written


@dataclass
class ReadUnit:
    """Pages a stream writes in one piece, and what STATE records as they are written."""

    pages: Iterator[Page]
    #: Everything before this bookmark is written.
    written: Callable[[str], None]
    #: The last page is written.
    finished: Callable[[], None] = lambda: None
    #: Whether the unit backfills accounts new to the stream (for the run summary).
    backfill: bool = False
    #: The table version its RECORDs carry (a reconciliation), if any.
    version: int | None = None
