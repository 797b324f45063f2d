"""One rate limiter shared by every worker of a run."""

from __future__ import annotations

import threading
import time
import typing as t
from email.utils import parsedate_to_datetime


class RateLimiter:
    """Pauses all workers after a 429 and paces requests on the X-RateLimit headers.

    The API allows `X-RateLimit-Limit` requests per window and says how many are left
    (`X-RateLimit-Remaining`) and when the window resets (`X-RateLimit-Reset`). Requests still
    in flight will use up some of what is left, so the limiter counts them out: once fewer
    requests are left than `reserve`, it spreads the rest evenly over the time to the reset,
    and when none are left it holds every worker until the reset. The tap slows down before it
    is refused instead of after.
    """

    def __init__(self, reserve: int, share: float = 1.0) -> None:
        self._reserve = max(1, reserve)
        # This job may use `share` of the key's limit: the rest of each window is left to
        # the key's other clients, so it is counted out of what the key has left.
        self._share = min(max(share, 0.0), 1.0)
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._spacing = 0.0
        self._in_flight = 0
        self.waited_seconds = 0.0

    def acquire(self) -> None:
        """Block until this worker may send its next request; `release` must follow."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self._spacing
            self._in_flight += 1
            delay = slot - now
            self.waited_seconds += delay
        if delay > 0:
            time.sleep(delay)

    def release(self, headers: t.Mapping[str, str] | None) -> None:
        """The request is answered (headers) or failed (None): adjust the pace."""
        remaining = _number(headers.get("X-RateLimit-Remaining")) if headers else None
        reset = _number(headers.get("X-RateLimit-Reset")) if headers else None
        limit = _number(headers.get("X-RateLimit-Limit")) if headers else None
        if remaining is not None and limit is not None:
            remaining -= (1.0 - self._share) * limit
        with self._lock:
            self._in_flight -= 1
            if remaining is None or reset is None:
                return
            budget = remaining - self._in_flight
            if budget <= 0:
                self._next_slot = max(self._next_slot, time.monotonic() + reset)
                self._spacing = 0.0
            else:
                self._spacing = reset / budget if budget <= self._reserve else 0.0

    def pause(self, seconds: float) -> None:
        """Hold every worker back for `seconds` (a 429's Retry-After)."""
        with self._lock:
            self._next_slot = max(self._next_slot, time.monotonic() + seconds)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """Seconds a `Retry-After` header asks for; the HTTP-date form counts from now."""
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    if value:
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            pass
    return default
