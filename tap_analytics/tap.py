"""The tap: its settings, its streams, and a sync that fetches them concurrently."""

from __future__ import annotations

import functools
import gc
import logging
import sys
import threading
import time
import typing as t
from concurrent.futures import Future
from functools import cached_property

from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.helpers.capabilities import (
    CapabilitiesEnum,
    PluginCapabilities,
    TapCapabilities,
)
from singer_sdk.singerlib.catalog import REPLICATION_FULL_TABLE
from typing_extensions import override

from tap_analytics import accounts, numeric_settings, reconcile, streams, timestamps, transport
from tap_analytics import state as tap_state
from tap_analytics.accounts import MAX_USER_IDS, AccountLedger, HeldState
from tap_analytics.client import AnalyticsStream, ReadUnit
from tap_analytics.errors import AnalyticsError, APIRequestError, redactor
from tap_analytics.listing import AccountListing
from tap_analytics.ratelimit import RateLimiter
from tap_analytics.scheduler import PageScheduler
from tap_analytics.sdk import SeamTap, check_contract
from tap_analytics.stats import log_summary
from tap_analytics.writer import PageWriter

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

STREAM_TYPES: list[type[AnalyticsStream]] = [
    streams.UsersStream,
    streams.MediaStream,
    streams.StoriesStream,
    streams.MediaInsightsStream,
    streams.StoryInsightsStream,
    streams.UserInsightsStream,
    streams.UserLifetimeInsightsStream,
]
STREAM_NAMES: tuple[str, ...] = tuple(vars(stream_type)["name"] for stream_type in STREAM_TYPES)


class ReconciliationScopeError(AnalyticsError):
    """A reconciliation asked of a job that reads only some accounts."""


class RunFailedError(AnalyticsError):
    """One or more streams failed; each line says which and what to do."""


class TapAnalytics(SeamTap):
    """Singer tap for the Analytics API v1."""

    name = "tap-analytics"
    message_writer_class = PageWriter
    # The SDK's defaults, less BATCH files: the tap writes Singer messages. ACTIVATE_VERSION
    # comes from reconciliations (reconcile_deletes, or a stream selected FULL_TABLE).
    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [
        TapCapabilities.CATALOG,
        TapCapabilities.STATE,
        TapCapabilities.DISCOVER,
        TapCapabilities.ACTIVATE_VERSION,
        PluginCapabilities.ABOUT,
        PluginCapabilities.STREAM_MAPS,
        PluginCapabilities.FLATTENING,
        PluginCapabilities.STRUCTURED_LOGGING,
    ]

    config_jsonschema = th.PropertiesList(
        th.Property(
            "api_key",
            th.StringType,
            required=True,
            secret=True,
            title="API key",
            description="The account's API key. Keep it secret: the tap never prints it.",
        ),
        th.Property(
            "api_url",
            th.StringType(pattern=r"^https?://[^\s/]+(/[^\s]*)?$"),
            default="https://api.example.com",
            title="API URL",
            description="Base URL of the API, without /v1: change it for a regional host or a "
            "sandbox.",
        ),
        th.Property(
            "allow_insecure_http",
            th.BooleanType,
            default=False,
            title="Allow plain HTTP",
            description="Allow an http:// api_url on a host other than this machine. Over plain "
            "HTTP the API key and every record cross the network in clear text: anyone on the "
            "way can read the key and use it. Leave false and use https://; http:// to 127.0.0.1, "
            "::1 or localhost is always allowed.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="ISO 8601 instant. The first run reads records updated since then; "
            "leave empty to read everything. Later runs start from their bookmark.",
        ),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1, maximum=100),
            default=100,
            title="Page size",
            description="Records per request, 1 to 100 (1 is read as 2: consecutive pages "
            "overlap by one record to detect data shifting under the tap). Larger pages mean "
            "fewer requests.",
        ),
        th.Property(
            "api_key_location",
            th.StringType(allowed_values=["query", "header"]),
            default="query",
            title="API key location",
            description="Send the key as the `api_key` query parameter (`query`) or as the "
            "`X-API-Key` header (`header`, which keeps it out of proxy logs).",
        ),
        th.Property(
            "user_ids",
            th.ArrayType(th.StringType(pattern=r"^[0-9]{1,20}$")),
            title="Account ids",
            description="Read only these accounts (at most 50 ids, digits). Leave empty for "
            "every account the key can see. To read more accounts, split them across jobs. "
            "Accounts added later, here or granted to the key, are backfilled from start_date.",
        ),
        th.Property(
            "backfill_user_ids",
            th.ArrayType(th.StringType(pattern=r"^[0-9]{1,20}$")),
            title="Backfill account ids",
            description="For one run: read these accounts' history again from start_date in "
            "every selected stream, as if they were new (a dropped table, history lost before "
            "an upgrade). Remove them after the run: while set, every run re-reads them.",
        ),
        th.Property(
            "request_timeout",
            numeric_settings.number_or_string(th.NumberType(exclusive_minimum=0)),
            default=30,
            title="Request timeout",
            description="Seconds to wait for a response before retrying the request.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0, maximum=50),
            default=8,
            title="Maximum retries",
            description="Retries of a failed request (429, 5xx, timeouts, resets) with "
            "exponential backoff before the stream fails.",
        ),
        th.Property(
            "max_concurrency",
            th.IntegerType(minimum=1, maximum=64),
            default=8,
            title="Maximum concurrency",
            description="Requests in flight at once, across all streams, not counting late "
            "ones (a stalled response, a retry backing off: up to as many more may then be "
            "open; while the accounts listing is read, a quarter more, one at least). It sets "
            "how many slow responses overlap, not the request rate: the tap paces itself to "
            "the API's rate limit (see rate_limit_share).",
        ),
        th.Property(
            "rate_limit_share",
            numeric_settings.number_or_string(th.NumberType(exclusive_minimum=0, maximum=1)),
            default=1,
            title="Rate limit share",
            description="The fraction of the key's X-RateLimit-Limit this job may use, above 0 "
            "and at most 1. Give each of N jobs sharing a key 1/N, or leave 1 and let adaptive "
            "pacing share the key with the other jobs it sees draining it.",
        ),
        th.Property(
            "user_agent",
            th.StringType,
            title="User agent",
            description="User-Agent header to send; defaults to tap-analytics/<version>.",
        ),
        th.Property(
            "progress_interval",
            numeric_settings.number_or_string(th.NumberType(minimum=0)),
            default=10,
            title="Progress interval",
            description="Seconds between two progress lines of a stream (records and pages so "
            "far, share of the API's total, rate, time left); short runs stay quiet. 0 logs "
            "every page.",
        ),
        th.Property(
            "strict",
            th.BooleanType,
            default=False,
            title="Strict schema",
            description="Fail the run when a field the schema says is never null comes back "
            "null or missing, instead of loading it and warning.",
        ),
        th.Property(
            "reconcile_deletes",
            th.BooleanType,
            default=False,
            title="Reconcile deletes",
            description="For one run: read every stream completely as a new table version and, "
            "once a stream is read whole, send ACTIVATE_VERSION so the target flags rows "
            "deleted at the API (target-postgres sets _sdc_deleted_at, or deletes them with "
            "hard_delete). Only in a job without user_ids, while no other job writes the same "
            "tables. The next run is incremental again.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        redactor.add_secret(str(self.config.get("api_key", "")))
        for handler in logging.getLogger().handlers:
            handler.addFilter(redactor)
        logging.getLogger("urllib3").setLevel(logging.WARNING)
        self._check_settings()

    def _check_settings(self) -> None:
        """What the JSON schema cannot say: a parseable date, 50 ids at most, no clear-text key."""
        errors = []
        host = transport.remote_plain_http_host(str(self.config.get("api_url", "")))
        if host and not self.config.get("allow_insecure_http"):
            errors.append(
                f"api_url: http:// to {host} would send the API key in clear text; use https://, "
                "or set allow_insecure_http to true to accept that risk"
            )
        start_date = self.config.get("start_date")
        try:
            if start_date:
                timestamps.parse(start_date)
        except ValueError:
            errors.append(
                f"start_date: {start_date!r} is not an ISO 8601 date or instant; "
                "write it like 2026-01-01T00:00:00Z"
            )
        if len(self.config.get("user_ids") or []) > MAX_USER_IDS:
            errors.append(f"user_ids: at most {MAX_USER_IDS} ids per job; split the rest")
        if self.config.get("reconcile_deletes") and self.config.get("user_ids"):
            errors.append(
                "reconcile_deletes: cannot be combined with user_ids: a reconciliation flags "
                "every row of a table it does not read, and jobs that split accounts share "
                "tables; reconcile in one job without user_ids"
            )
        # A number setting from the environment is a string, which JSON schema's bounds skip.
        errors += numeric_settings.string_errors(self.config, self.config_jsonschema)
        if errors:
            raise ConfigValidationError("Config validation failed", errors=errors)

    @property
    def max_concurrency(self) -> int:
        """Requests in flight at once, across all streams."""
        return int(self.config.get("max_concurrency", 8))

    @cached_property
    def http_sessions(self) -> threading.local:
        """Each thread's `requests.Session` (and keep-alive connection), shared by all streams."""
        return threading.local()

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        """The limiter every request of this run waits on."""
        return RateLimiter(
            reserve=self.max_concurrency, share=float(self.config.get("rate_limit_share", 1))
        )

    @property
    def page_writer(self) -> PageWriter:
        """The writer of this run's messages, which writes pages of records whole."""
        writer = self.message_writer
        assert isinstance(writer, PageWriter)
        return writer

    @override
    def discover_streams(self) -> list[AnalyticsStream]:
        return [stream_type(self, resources=self) for stream_type in STREAM_TYPES]

    @override
    def load_state(self, state: dict[str, t.Any]) -> None:
        # The SDK keeps only `bookmarks`; the tap's own part of STATE is kept beside them,
        # after every released format has been migrated to the current one.
        migrated = tap_state.migrate(state)
        super().load_state(migrated)
        t.cast("dict[str, t.Any]", self.state)[tap_state.KEY] = migrated[tap_state.KEY]

    @property
    def own_state(self) -> dict[str, t.Any]:
        """The tap's own part of STATE (`state.py`)."""
        own: dict[str, t.Any] = t.cast("dict[str, t.Any]", self.state)[tap_state.KEY]
        return own

    def reconciles(self, stream: AnalyticsStream) -> bool:
        """Whether the stream is reconciled this run: `reconcile_deletes`, or FULL_TABLE."""
        full_table = stream.replication_method == REPLICATION_FULL_TABLE
        return full_table or bool(self.config.get("reconcile_deletes"))

    @cached_property
    def state_sink(self) -> HeldState:
        """The streams' STATE, held back while the account listing is still being read."""
        return HeldState(self.state_writer)

    def _list_accounts(self) -> tuple[str, Future[frozenset[str]]]:
        """The API's clock, from the listing's first page read now; the accounts, read after.

        The rest of the listing is read beside the streams' first pages. An `api_url` that
        is not the API, or a rejected key, ends the run after one request.
        """
        users = self.streams["users"]
        assert isinstance(users, AnalyticsStream)
        listing = AccountListing(
            users.fetch_page_and_clock,
            users.page_size,
            self.config.get("user_ids"),
            self.max_concurrency,
        )
        clock = listing.first_page()
        visible: Future[frozenset[str]] = Future()

        def read_rest() -> None:
            try:
                visible.set_result(frozenset(listing.rest()))
            except BaseException as exc:  # handed to the thread that waits on it
                visible.set_exception(exc)

        # A daemon thread: a run that fails meanwhile exits without waiting for the listing.
        threading.Thread(target=read_rest, name="account-listing", daemon=True).start()
        return clock, visible

    def _own_unit(
        self,
        stream: AnalyticsStream,
        scheduler: PageScheduler,
        ledger: AccountLedger,
        visible: Future[frozenset[str]],
        version: int | None,
    ) -> ReadUnit:
        """The stream's own window, opened now; or, reconciling, its full read as `version`."""
        if version is not None and self.reconciles(stream):
            return self._reconciliation(stream, scheduler, ledger, visible, version)
        return stream.own_window(scheduler.open(stream))

    def _plan_backfills(
        self,
        selected: list[AnalyticsStream],
        bookmarks: dict[str, str | None],
        ledger: AccountLedger,
        visible: frozenset[str],
        version: int | None,
    ) -> dict[str, list[accounts.Backfill]]:
        """Every stream's backfills of accounts new to it, from the bookmarks the run began with.

        Planned once the listing is in, into the ledger (STATE) only: nothing is read yet.
        """
        self.logger.info("Accounts in scope and visible to the key: %d", len(visible))
        start = self.config.get("start_date")
        plans = {}
        for stream in selected:
            if version is not None and self.reconciles(stream):
                continue
            bookmark = bookmarks[stream.name]
            if bookmark is not None and stream.name not in ledger.coverage:
                self.logger.info(
                    "Stream %s: STATE from before account coverage was kept; counting the %d "
                    "accounts visible now as read whole (README: Accounts that join later)",
                    stream.name,
                    len(visible),
                )
            plans[stream.name] = ledger.plan(
                stream.name,
                bookmark,
                visible,
                timestamps.api_form(start) if start else None,
                again=set(self.config.get("backfill_user_ids") or ()),
            )
        return plans

    def _backfill_unit(
        self,
        stream: AnalyticsStream,
        scheduler: PageScheduler,
        ledger: AccountLedger,
        backfill: accounts.Backfill,
    ) -> ReadUnit:
        """One backfill of a stream, opened now."""
        self.logger.info(
            "Stream %s: backfilling %d accounts new to it, from %s to %s: %s",
            stream.name,
            len(backfill.accounts),
            backfill.updated_since or "the beginning",
            backfill.updated_until,
            ", ".join(backfill.accounts),
        )
        stream.stats.backfilled_accounts += len(backfill.accounts)
        return ReadUnit(
            scheduler.open(stream, backfill.window).pages(),
            functools.partial(ledger.advance, backfill),
            functools.partial(ledger.complete, backfill),
            backfill=True,
        )

    def _reconciliation(
        self,
        stream: AnalyticsStream,
        scheduler: PageScheduler,
        ledger: AccountLedger,
        visible: Future[frozenset[str]],
        version: int,
    ) -> ReadUnit:
        """A stream's reconciliation: the full read, activated when whole and at rest."""
        floor = reconcile.start_floor(self.own_state)
        reconciliation = reconcile.Reconciliation(
            functools.partial(scheduler.open, stream), stream, floor
        )
        stream.stats.version = version
        self.logger.info(
            "Stream %s: reconciling deletes: reading every record from %s as version %d",
            stream.name,
            floor or "the beginning",
            version,
        )

        def finished() -> None:
            assert reconciliation.end is not None
            if reconciliation.converged:
                stream.activate_version(version)
                stream.stats.version_activated = True
            else:
                self.logger.warning(
                    "Stream %s: the data kept changing through %d pages of catch-up, so no "
                    "version is activated and no row flagged; reconcile when writes are quieter",
                    stream.name,
                    reconcile.MAX_CATCH_UP_PAGES,
                )
            stream.set_bookmark(reconciliation.end)
            ledger.cover(stream.name, visible.result())

        return ReadUnit(reconciliation.pages(), lambda _: None, finished, version=version)

    def _refuse_reconciling_a_subset(self, selected: list[AnalyticsStream]) -> None:
        """A reconciliation flags every row of a table it did not read: it must read them all."""
        if not self.config.get("user_ids"):
            return
        for stream in selected:
            if self.reconciles(stream):
                msg = (
                    f"stream {stream.name}: FULL_TABLE replication (a reconciliation every run) "
                    "reads every account, so it cannot be combined with user_ids: select the "
                    "stream INCREMENTAL in this job, or run it in a job without user_ids"
                )
                raise ReconciliationScopeError(msg)

    @override
    def sync_selected_streams(self) -> None:
        # One scheduler fetches the pages of all selected streams at once; the streams are
        # still written one after another. A stream the key may not read (403) does not stop
        # the others. The tap has no child streams and writes no progress markers, so the
        # SDK's loop's other duties (resetting markers, forcing full-table parents) do not
        # arise here.
        if tap_state.KEY not in self.state:
            self.load_state({})
        selected = [
            s for s in self.streams.values() if isinstance(s, AnalyticsStream) and s.selected
        ]
        self._refuse_reconciling_a_subset(selected)
        start = self.config.get("start_date")
        fresh = not any(tap_state.bookmark(self.state, name) for name in STREAM_NAMES)
        reconcile.note_start(
            self.own_state, timestamps.api_form(start) if start else None, fresh=fresh
        )
        self.state_writer.write_state(self.state)
        started = time.monotonic()
        failures: list[AnalyticsError] = []
        plans: Callable[[], dict[str, list[accounts.Backfill]]] | None = None
        with PageScheduler(self.max_concurrency) as scheduler:
            try:
                if selected:
                    clock, visible = self._list_accounts()
                    ledger = AccountLedger(self.own_state)
                    reconciling = any(self.reconciles(stream) for stream in selected)
                    version = reconcile.next_version(self.own_state, clock) if reconciling else None
                    by_name = {stream.name: stream for stream in selected}
                    bookmarks = {name: tap_state.bookmark(self.state, name) for name in by_name}
                    plans = functools.cache(
                        lambda: self._plan_backfills(
                            selected, bookmarks, ledger, visible.result(), version
                        )
                    )
                    # The first STATE once the listing is in carries the plan; a stream
                    # without a bookmark has nothing to backfill, so it never waits for it.
                    self.state_sink.hold_until(visible, then=plans)
                    opened = functools.cache(
                        lambda: {
                            name: [
                                self._backfill_unit(by_name[name], scheduler, ledger, b)
                                for b in backfills
                            ]
                            for name, backfills in plans().items()
                        }
                    )
                    for stream in selected:
                        own = self._own_unit(stream, scheduler, ledger, visible, version)
                        later = opened if bookmarks[stream.name] is not None else None
                        stream.read_from(_then(own, later, stream.name))
            except AnalyticsError as exc:
                failures.append(exc)
            for stream in selected:
                if failures and not _stream_specific(failures[-1]):
                    stream.stats.finish("skipped")
                    continue
                stream.stats.start()
                try:
                    stream.sync()
                    stream.finalize_state_progress_markers()
                except AnalyticsError as exc:
                    stream.stats.finish("failed")
                    failures.append(exc)
                else:
                    stream.stats.finish("ok")
            if plans is not None:
                try:
                    plans()  # the listing may have outlasted the streams
                except AnalyticsError as exc:
                    if exc not in failures:
                        failures.append(exc)
                else:
                    self.state_sink.write_state(self.state)
        log_summary(
            self.logger,
            [stream.stats for stream in selected],
            time.monotonic() - started,
            self.rate_limiter.waited_seconds,
        )
        if failures:
            raise RunFailedError("\n".join(str(failure) for failure in failures))


def _then(
    first: ReadUnit, later: Callable[[], dict[str, list[ReadUnit]]] | None, stream: str
) -> Iterator[ReadUnit]:
    """A stream's units: its own window, then its backfills (`later`, once the listing is in)."""
    yield first
    if later is not None:
        yield from later().get(stream, [])


def _stream_specific(error: AnalyticsError) -> bool:
    """Whether other streams may still succeed after this error (a missing scope)."""
    return isinstance(error, APIRequestError) and error.status == 403


def main() -> None:
    """Console entry point: expected failures end in one line each, without a traceback."""
    # What the imports made lives until the process exits. Frozen, it is skipped by the
    # collector's full passes during the run and at exit (about 60 ms of every run's end).
    gc.freeze()
    try:
        check_contract()
        TapAnalytics.cli()
    except AnalyticsError as exc:
        for line in redactor.redact(str(exc)).splitlines():
            sys.stderr.write(f"tap-analytics: error: {line}\n")
        sys.exit(1)
