"""What the sandbox answers, independent of the HTTP plumbing: the API, its faults and the admin.

`SandboxApi.handle` turns a request (method, target, headers, body) into a `Reply`; it runs in
the server's handler thread, so its sleeps (latency, stalls) overlap between clients.
"""

from __future__ import annotations

import gzip
import itertools
import math
import random
import re
import threading
import time
import typing as t
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from tap_analytics.sandbox.config import DEFAULT_RATE_LIMIT, STATIC_SWITCHES, SandboxConfig
from tap_analytics.sandbox.data import Clock, Dataset, Row
from tap_analytics.sandbox.records import RESOURCES

API_PREFIX = "/v1/"
ADMIN_PREFIX = "/_sandbox/"
MAX_LIMIT = 100
DEFAULT_LIMIT = 25
MAX_ACCOUNTS = 50
PROXY_REASONS = {"502": "Bad Gateway", "503": "Service Unavailable", "504": "Gateway Timeout"}
_INSTANT = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:(Z)|([+-])(\d\d):?(\d\d))",
    re.ASCII,
)
_COUNT = re.compile(r"\d{1,15}", re.ASCII)
_Query = dict[str, list[str]]
_COUNTERS = (
    "requests",  # API requests (admin requests are never counted)
    "list_requests",  # requests answered from the data (also drives mutate_every)
    "rate_limited",  # 429s from the rate limit (injected 429s count under faults)
    "requests_in_retry_after_window",  # arrived before the Retry-After their key got elapsed
    "mutations",  # batches of changes applied, by mutate() or mutate_every
)
#: What fast_pages keeps at most (bytes of pages); past it the cache starts afresh.
FAST_PAGES_BYTES = 512 * 1024 * 1024


def accepts_gzip(accept_encoding: str) -> bool:
    """Tell whether an Accept-Encoding header lists gzip."""
    return any(part.split(";")[0].strip().lower() == "gzip" for part in accept_encoding.split(","))


def gzip_body(body: bytes) -> bytes:
    """A body as the server compresses it (fast, and the same bytes every time)."""
    return gzip.compress(body, compresslevel=1, mtime=0)


@dataclass
class Reply:
    """A response to send, or (reset) a connection to drop without one."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False
    #: The body is already gzip-compressed (a fast_pages page for a client that accepts it).
    gzipped: bool = False


class BadParameterError(ValueError):
    """A query parameter is malformed or out of range (400 invalid_parameter)."""


def parse_instant(raw: str) -> int:
    """Return an ISO 8601 instant with an offset (`Z`, `+0000`, `+00:00`) as epoch seconds.

    Fractions round up: records have whole seconds, so `>= t` and `< t` both mean `>= ceil(t)`.
    """
    match = _INSTANT.fullmatch(raw)
    if match is None:
        raise BadParameterError(f"{raw!r} is not an ISO 8601 instant with an offset")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta() if zulu else timedelta(hours=int(off_h), minutes=int(off_m))
        zone = timezone(-offset if sign == "-" else offset)
        year_, month_, day_, hour_, minute_, second_ = map(
            int, (year, month, day, hour, minute, second)
        )
        moment = datetime(year_, month_, day_, hour_, minute_, second_, tzinfo=zone)
    except ValueError as error:
        raise BadParameterError(f"{raw!r} is not a valid instant: {error}") from None
    return int(moment.timestamp()) + (1 if fraction and int(fraction) else 0)


def _param(query: _Query, name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _count_param(query: _Query, name: str, default: int, low: int, high: int | None) -> int:
    """Return an integer parameter, checked against [low, high]."""
    raw = _param(query, name)
    if raw is None:
        return default
    value = int(raw) if _COUNT.fullmatch(raw) else -1
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise BadParameterError(f"{name} must be an integer {bounds}")
    return value


@dataclass
class _ListQuery:
    offset: int
    limit: int
    since: int | None
    until: int | None
    account_ids: list[str] | None


def _list_query(query: _Query) -> _ListQuery:
    """Parse and validate the parameters of a list request."""
    since, until, users = (
        _param(query, name) for name in ("updated_since", "updated_until", "user_id")
    )
    account_ids = None
    if users is not None:
        account_ids = users.split(",")
        if len(account_ids) > MAX_ACCOUNTS or not all(account_ids):
            raise BadParameterError(f"user_id must list 1 to {MAX_ACCOUNTS} comma-separated ids")
    return _ListQuery(
        offset=_count_param(query, "offset", 0, 0, None),
        limit=_count_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        since=None if since is None else parse_instant(since),
        until=None if until is None else parse_instant(until),
        account_ids=account_ids,
    )


class RateLimiter:
    """Fixed windows of requests per API key; enforced only when a limit is configured.

    A key's window opens with its first request after the last window closed
    (`rate_window_start` first_request), or windows follow the wall clock (clock: they start
    at multiples of `rate_window` seconds since the epoch, for every key alike).
    """

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, requests)
        self._lock = threading.Lock()

    def _window(self, key: str, config: SandboxConfig, now: float) -> tuple[float, int]:
        """The key's window at `now` (wall clock for clock-aligned windows): start, requests."""
        window = config.rate_window
        start, count = self._windows.get(key, (-math.inf, 0))
        if config.rate_window_start == "clock":
            aligned = math.floor(now / window) * window  # the same float all through a window
            return (start, count) if aligned == start else (aligned, 0)
        return (now, 0) if now - start >= window else (start, count)

    @staticmethod
    def _now(config: SandboxConfig, now: float) -> float:
        """`now` (monotonic) for windows from a first request; the wall clock for aligned ones."""
        return time.time() if config.rate_window_start == "clock" else now

    def admit(self, key: str, config: SandboxConfig, now: float) -> int:
        """Count a request; return 0 if admitted, else the seconds to wait (Retry-After)."""
        with self._lock:
            now = self._now(config, now)
            start, count = self._window(key, config, now)
            if config.rate_limit is not None and count >= config.rate_limit:
                self._windows[key] = (start, count)
                return max(1, math.ceil(start + config.rate_window - now))
            self._windows[key] = (start, count + 1)
            return 0

    def headers(self, key: str | None, config: SandboxConfig, now: float) -> dict[str, str]:
        """Return the X-RateLimit-* headers for a key (None: a request with no valid key)."""
        limit = config.rate_limit or DEFAULT_RATE_LIMIT
        with self._lock:
            now = self._now(config, now)
            start, count = (now, 0) if key is None else self._window(key, config, now)
        enforced = config.rate_limit is not None  # unlimited: never suggest slowing down
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - count) if enforced else limit),
            "X-RateLimit-Reset": str(max(0, math.ceil(start + config.rate_window - now))),
        }


class Stats:
    """Counters of what the API did, for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._responses: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self.first_request_at: float | None = None  # wall clock, for benchmarks' floors

    def add(self, name: str, amount: int = 1) -> int:
        """Add to a counter and return its new value."""
        with self._lock:
            self._counts[name] += amount
            return self._counts[name]

    def response(self, status: int) -> None:
        """Count a response by status."""
        with self._lock:
            self._responses[str(status)] += 1

    def fault(self, kind: str) -> None:
        """Count an injected fault by kind."""
        with self._lock:
            self._faults[kind] += 1

    def as_dict(self) -> dict[str, Any]:
        """Return all counters (statuses and fault kinds as string keys, as in JSON)."""
        with self._lock:
            return {
                **{name: self._counts[name] for name in _COUNTERS},
                "responses": dict(self._responses),
                "faults": dict(self._faults),
                "first_request_at": self.first_request_at,
            }


class Headers(t.Protocol):
    """Request headers, looked up case-insensitively by the HTTP server (a dict in tests)."""

    def get(self, name: str, /) -> str | None:
        """The header's value, if it was sent."""


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, msgspec.json.encode(payload), headers=headers or {})


def _error(status: int, code: str, message: str, request_id: str, **headers: str) -> Reply:
    """Return the API's error reply `{"error": {"code", "message", "request_id"}}`."""
    payload = {"error": {"code": code, "message": message, "request_id": request_id}}
    return _json(status, payload, {"X-Request-Id": request_id, **headers})


def _proxy_page(status: str) -> Reply:
    """Return the HTML error page a reverse proxy would send."""
    title = f"{status} {PROXY_REASONS[status]}"
    html = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Reply(int(status), html.encode(), content_type="text/html")


class SandboxApi:
    """State and behaviour of one sandbox: dataset, switches, counters, rate limits and faults."""

    def __init__(self, config: SandboxConfig) -> None:
        self._config = config
        self.dataset = Dataset(
            config.records_per_resource,
            config.seed,
            Clock(frozen=config.frozen_clock),
            accounts=config.accounts,
        )
        self.stats = Stats()
        self._rates = RateLimiter()
        self._lock = threading.Lock()
        self._fault_rng = random.Random(f"{config.seed}:faults")
        self._total_rng = random.Random(f"{config.seed}:missing_total")
        self._retry_until: dict[str | None, float] = {}  # key -> end of the Retry-After it got
        self._request_ids = itertools.count(1)
        #: fast_pages: a page's bytes by what determines them (resource, paging, rows, gzip).
        self._pages: dict[tuple[object, ...], bytes] = {}
        self._pages_bytes = 0

    @property
    def config(self) -> SandboxConfig:
        """Return the current switches."""
        return self._config

    def configure(self, **switches: Any) -> SandboxConfig:
        """Change switches at runtime (validated like the constructor); return the new config."""
        frozen = STATIC_SWITCHES & switches.keys()
        if frozen:
            raise ValueError(f"{', '.join(sorted(frozen))} cannot change while the server runs")
        with self._lock:
            self._config = replace(self._config, **switches)
            return self._config

    def mutate(
        self,
        updates: int = 0,
        inserts: int = 0,
        deletes: int = 0,
        resources: Iterable[str] | None = None,
    ) -> None:
        """Change the data now (see Dataset.mutate)."""
        self.dataset.mutate(updates, inserts, deletes, resources)
        self.stats.add("mutations")

    def handle(self, method: str, target: str, headers: Headers, body: bytes) -> Reply:
        """Answer one HTTP request."""
        url = urlsplit(target)
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path.startswith(ADMIN_PREFIX):
            return self._admin(method, url.path.removeprefix(ADMIN_PREFIX), query, body)
        return self._api(method, url.path, query, headers)

    # --- the API --------------------------------------------------------------------------

    def _api(self, method: str, path: str, query: _Query, headers: Headers) -> Reply:
        """Answer an API request: latency, then maybe a fault, else the real answer."""
        arrived, config = time.monotonic(), self._config
        key = headers.get("X-API-Key") or _param(query, "api_key")
        request_id = f"req_{next(self._request_ids):012d}"
        if self.stats.add("requests") == 1:
            self.stats.first_request_at = time.time()
        with self._lock:
            if arrived < self._retry_until.get(key, 0.0):
                self.stats.add("requests_in_retry_after_window")
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        fault = self._draw_fault(config)
        if fault == "reset":
            return Reply(0, reset=True)
        if fault == "stall":
            time.sleep(self._stall_seconds(config))
        if fault in PROXY_REASONS:
            reply = _proxy_page(fault)
        elif fault == "500":
            reply = _error(500, "internal_error", "Internal error, try again later.", request_id)
        elif fault == "429":
            reply = self._too_many(key, 1, request_id)
        else:
            reply = self._answer(method, path, query, headers, key, config, request_id)
        if fault == "truncated":
            reply.body = reply.body[: len(reply.body) // 2]
        valid_key = key if key in config.api_keys else None
        reply.headers.update(self._rates.headers(valid_key, config, time.monotonic()))
        self.stats.response(reply.status)
        return reply

    def _draw_fault(self, config: SandboxConfig) -> str | None:
        """Return the fault kind this request gets, if any (seeded draws)."""
        if not config.fault_rate or not config.faults:
            return None
        with self._lock:
            if self._fault_rng.random() >= config.fault_rate:
                return None
            kind = self._fault_rng.choice(config.faults)
        self.stats.fault(kind)
        return kind

    def _stall_seconds(self, config: SandboxConfig) -> float:
        """How long this stall lasts: stall_seconds, or a seeded draw up to stall_seconds_max."""
        low, high = config.stall_seconds, config.stall_seconds_max
        if high <= low:
            return low
        with self._lock:
            return self._fault_rng.uniform(low, high)

    def _too_many(self, key: str | None, retry_after: int, request_id: str) -> Reply:
        """Return a 429 and remember until when this key was asked to wait."""
        with self._lock:
            self._retry_until[key] = time.monotonic() + retry_after
        message = f"Too many requests, retry in {retry_after} s."
        return _error(429, "rate_limited", message, request_id, **{"Retry-After": str(retry_after)})

    def _answer(
        self,
        method: str,
        path: str,
        query: _Query,
        headers: Headers,
        key: str | None,
        config: SandboxConfig,
        request_id: str,
    ) -> Reply:
        """Return the real answer: routing, authentication, rate limit, scope, then the data."""
        spec = RESOURCES.get(path.removeprefix(API_PREFIX)) if path.startswith(API_PREFIX) else None
        if spec is None:
            return _error(404, "not_found", f"No endpoint at {path}.", request_id)
        if method != "GET":
            return _error(405, "method_not_allowed", "List endpoints accept GET only.", request_id)
        if not key:
            message = "Send an API key (X-API-Key header or api_key parameter)."
            return _error(401, "missing_api_key", message, request_id)
        scopes = config.api_keys.get(key)
        if scopes is None:
            return _error(401, "invalid_api_key", "The API key is unknown or revoked.", request_id)
        retry_after = self._rates.admit(key, config, time.monotonic())
        if retry_after:
            self.stats.add("rate_limited")
            return self._too_many(key, retry_after, request_id)
        if spec.scope is not None and spec.scope not in scopes:
            message = f"This endpoint needs the scope {spec.scope}."
            return _error(403, "insufficient_scope", message, request_id)
        try:
            params = _list_query(query)
        except BadParameterError as error:
            return _error(400, "invalid_parameter", str(error), request_id)
        if params.account_ids and not set(config.failing_user_ids).isdisjoint(params.account_ids):
            # A server bug that hits some accounts only: the same 500 however often it is retried.
            return _error(500, "internal_error", "Internal error, try again later.", request_id)
        if config.fast_pages:
            gzipped = accepts_gzip(headers.get("Accept-Encoding") or "")
            body = self._list_bytes(spec.name, params, config, gzipped=gzipped)
            return Reply(200, body, headers={"X-Request-Id": request_id}, gzipped=gzipped)
        return _json(200, self._list(spec.name, params, config), {"X-Request-Id": request_id})

    def _list_bytes(
        self, resource: str, params: _ListQuery, config: SandboxConfig, *, gzipped: bool
    ) -> bytes:
        """The envelope's bytes, from the cache when this page was served before (fast_pages).

        A page is what its rows (slot, version and sort key each), its paging and the
        encoding make it, so a changed record makes a new page and the cache is never stale.
        """
        rows, paging = self._page(resource, params, config)
        cache_key = (resource, gzipped, params.offset, params.limit, paging.get("total"), *rows)
        body = self._pages.get(cache_key)
        if body is None:
            dataset = self.dataset
            data = [dataset.render(resource, row) for row in rows]
            body = msgspec.json.encode({"data": data, "paging": paging})
            if gzipped:
                body = gzip_body(body)
            with self._lock:
                if self._pages_bytes + len(body) > FAST_PAGES_BYTES:
                    self._pages.clear()
                    self._pages_bytes = 0
                self._pages[cache_key] = body
                self._pages_bytes += len(body)
        return body

    def _list(self, resource: str, params: _ListQuery, config: SandboxConfig) -> dict[str, Any]:
        """Return the envelope of a list request, mutating the data first when it is due."""
        rows, paging = self._page(resource, params, config)
        return {"data": [self.dataset.render(resource, row) for row in rows], "paging": paging}

    def _page(
        self, resource: str, params: _ListQuery, config: SandboxConfig
    ) -> tuple[list[Row], dict[str, int]]:
        """The rows of a list request and its paging, mutating the data first when it is due."""
        served = self.stats.add("list_requests")
        # The switches in force now, not those the request arrived with: a request that stalled
        # across configure(mutate_every=0) must not change the data after it (the lock orders
        # the two), or a caller that stopped the changes would see one land later.
        with self._lock:
            current = self._config
            if current.mutate_every and served % current.mutate_every == 0:
                self.mutate(current.mutate_updates, current.mutate_inserts, current.mutate_deletes)
        dataset = self.dataset
        accounts = None
        hidden = {dataset.ids.account_slot(account_id) for account_id in config.hidden_user_ids}
        if params.account_ids is not None:
            slots = {dataset.ids.account_slot(account_id) for account_id in params.account_ids}
            accounts = sorted(slot for slot in slots - hidden if slot is not None)
        elif hidden:
            accounts = sorted(set(range(dataset.ids.accounts)) - hidden)
        total, rows = dataset.query(
            resource, params.since, params.until, accounts, params.offset, params.limit
        )
        paging: dict[str, int] = {"offset": params.offset, "limit": params.limit}
        with self._lock:
            hide_total = (
                config.missing_total or self._total_rng.random() < config.missing_total_rate
            )
        if not hide_total:
            paging["total"] = total
        return rows, paging

    # --- the admin endpoints ------------------------------------------------------------------

    def _admin(self, method: str, name: str, query: _Query, body: bytes) -> Reply:
        """Answer /_sandbox/...: never faulted, delayed, limited or counted."""
        routes: dict[tuple[str, str], Callable[[], object]] = {
            ("GET", "snapshot"): self.dataset.snapshot,
            ("GET", "stats"): self.stats.as_dict,
            ("POST", "mutate"): lambda: self._admin_mutate(query),
            ("POST", "configure"): lambda: self._admin_configure(body),
        }
        route = routes.get((method, name))
        if route is None:
            payload = {
                "error": {"code": "not_found", "message": f"No admin endpoint {method} {name}"}
            }
            return _json(404, payload)
        try:
            return _json(200, route())
        except (ValueError, TypeError, msgspec.DecodeError) as error:  # bad parameters or JSON
            return _json(400, {"error": {"code": "invalid_parameter", "message": str(error)}})

    def _admin_mutate(self, query: _Query) -> dict[str, bool]:
        counts = {
            name: _count_param(query, name, 0, 0, None)
            for name in ("updates", "inserts", "deletes")
        }
        self.mutate(counts["updates"], counts["inserts"], counts["deletes"])
        return {"ok": True}

    def _admin_configure(self, body: bytes) -> dict[str, Any]:
        switches = msgspec.json.decode(body or b"{}")
        if not isinstance(switches, dict):
            raise TypeError("the body must be a JSON object of switches")
        return self.configure(**switches).to_dict()
