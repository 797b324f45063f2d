"""What a run did, per stream: for progress lines and the summary at the end."""

from __future__ import annotations

import json
import threading
import time
import typing as t
from http import HTTPStatus

from singer_sdk.exceptions import RetriableAPIError

if t.TYPE_CHECKING:
    import logging


def retry_cause(exc: BaseException | None) -> str:
    """Classify a retried failure for the summary: rate_limited, server, network or malformed."""
    if isinstance(exc, RetriableAPIError) and exc.response is not None:
        status = exc.response.status_code
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            return "rate_limited"
        return "server" if status >= HTTPStatus.INTERNAL_SERVER_ERROR else "malformed"
    return "network"


class StreamStats:
    """Counters of one stream, updated by the worker threads and the writer."""

    def __init__(self, stream: str, progress_interval: float) -> None:
        self.stream = stream
        self._progress_interval = progress_interval
        self.requests = 0
        self.pages = 0
        self.records = 0
        self.retries: dict[str, int] = {}
        #: Accounts new to the stream whose history this run read, and their records.
        self.backfilled_accounts = 0
        self.backfilled_records = 0
        #: A reconciliation's table version, the records that carry it, whether it was activated.
        self.version: int | None = None
        self.version_records = 0
        self.version_activated = False
        #: Records in the window according to the API's first answer (None if it gave no total).
        self.expected_records: int | None = None
        self.status = "not started"
        self._lock = threading.Lock()
        self._started = 0.0
        self._finished = 0.0
        self._last_progress = 0.0

    def count_request(self) -> None:
        """One HTTP request sent."""
        with self._lock:
            self.requests += 1

    def count_page(self) -> None:
        """One page received."""
        with self._lock:
            self.pages += 1

    def count_retry(self, exc: BaseException | None) -> None:
        """One failed attempt that will be retried."""
        cause = retry_cause(exc)
        with self._lock:
            self.retries[cause] = self.retries.get(cause, 0) + 1

    def start(self) -> None:
        """The writer begins this stream."""
        self._started = self._last_progress = time.monotonic()
        self.status = "running"

    def finish(self, status: str) -> None:
        """The writer is done with this stream: `ok` or `failed`."""
        self._finished = time.monotonic()
        self.status = status

    @property
    def seconds(self) -> float:
        """Wall time spent writing this stream."""
        end = self._finished or time.monotonic()
        return end - self._started if self._started else 0.0

    def count_records(self, count: int, logger: logging.Logger, *, backfill: bool = False) -> None:
        """Records written; logs a progress line when the last one is old enough."""
        self.records += count
        if backfill:
            self.backfilled_records += count
        now = time.monotonic()
        if now - self._last_progress < self._progress_interval:
            return
        self._last_progress = now
        rate = self.records / max(self.seconds, 1e-9)
        share = eta = ""
        if self.expected_records:
            left = max(self.expected_records - self.records, 0)
            expected = self.expected_records
            share = f" ({100 * self.records / expected:.0f}% of {expected:,})"
            eta = f", about {left / rate:.0f} s left" if rate else ""
        logger.info(
            "Progress %s: %s records%s, %s pages, %.0f records/s%s",
            self.stream,
            f"{self.records:,}",
            share,
            f"{self.pages:,}",
            rate,
            eta,
        )

    def as_dict(self) -> dict[str, t.Any]:
        """The counters as plain data, for the structured summary line."""
        return {
            "stream": self.stream,
            "status": self.status,
            "records": self.records,
            "pages": self.pages,
            "requests": self.requests,
            "retries": dict(sorted(self.retries.items())),
            "backfilled_accounts": self.backfilled_accounts,
            "backfilled_records": self.backfilled_records,
            "version": self.version,
            "version_records": self.version_records,
            "version_activated": self.version_activated,
            "seconds": round(self.seconds, 3),
        }


def log_summary(
    logger: logging.Logger, streams: list[StreamStats], wall_seconds: float, rate_wait: float
) -> None:
    """Log the run summary: a block for people, then one JSON line for machines."""
    lines = [f"{'stream':<24}{'status':<10}{'records':>10}{'pages':>8}{'retries':>9}  by cause"]
    for stats in streams:
        causes = ", ".join(f"{cause} {n}" for cause, n in sorted(stats.retries.items())) or "-"
        lines.append(
            f"{stats.stream:<24}{stats.status:<10}{stats.records:>10,}{stats.pages:>8,}"
            f"{sum(stats.retries.values()):>9}  {causes}"
        )
    lines.extend(
        f"{stats.stream}: {stats.backfilled_records:,} of these records backfill "
        f"{stats.backfilled_accounts} accounts new to the stream"
        for stats in streams
        if stats.backfilled_accounts
    )
    records = sum(stats.records for stats in streams)
    lines.append(
        f"{records:,} records in {wall_seconds:.1f} s ({records / max(wall_seconds, 1e-9):,.0f}"
        f" records/s); {rate_wait:.1f} s waited on rate limits"
    )
    logger.info("Run summary:\n  %s", "\n  ".join(lines))
    summary = {
        "records": records,
        "seconds": round(wall_seconds, 3),
        "rate_limit_wait_seconds": round(rate_wait, 3),
        "streams": [stats.as_dict() for stats in streams],
    }
    logger.info("RUN_SUMMARY %s", json.dumps(summary, separators=(",", ":")))
