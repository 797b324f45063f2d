"""Pace a run to the API key's rate-limit windows: use each window whole, share it, never 429.

The API allows `X-RateLimit-Limit` requests per window and key, says on every response how
many the key has left (`X-RateLimit-Remaining`, counting every client of the key) and in how
many whole seconds the window resets (`X-RateLimit-Reset`). `Pacer` is the decision logic on an
explicit clock; `RateLimiter` makes it blocking and shared by the run's worker threads.
"""

from __future__ import annotations

import math
import threading
import time
import typing as t
from collections import deque
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

#: Seconds past the latest moment the window can end before sending into the next one: the
#: server's and this machine's clocks tick alike, but not on the same microsecond.
BOUNDARY_MARGIN = 0.005
#: The window's end is known well enough once it is pinned to this many seconds.
PHASE_PRECISION = 0.07
#: Requests of a window held back to pin its end (sent where the Reset value steps down).
PHASE_PROBES = 4
#: Sharing the key, a client claims this fraction of what it sees left at a time (a few
#: clients claiming at once stay within it) ...
CLAIM_DIVISOR = 5
#: ... and once fewer than this many times its workers are left, one request at a time.
TAIL_WORKERS = 4
#: The one client whose answer says this many are left owns the window's last requests: the
#: others stop there, and it goes on once their last requests have surely arrived (each has
#: one at most on its way), so that none is left unused; for up to this many clients at once.
TAIL_OWNER = 4
#: ... but for this many: a client acting on old news (see `Pacer._renew`) may send one
#: request into the tail without knowing it has an owner, and it must not be refused.
TAIL_RESERVE = 2
#: News of the key older than this many recent round trips (plus the slack, in seconds, for
#: the machine's scheduling) is stale: a client that waits on it sends one request to renew it.
STALE_ROUND_TRIPS = 2
STALE_SLACK = 0.02


@dataclass
class _Window:
    """What this process knows about the key's current window."""

    opened: float  # when this process began sending into it
    allocation: int  # requests it may send before any answer from the window says more
    deferred: int = 0  # more of the allocation, held back until the window's first answer
    sent: int = 0  # requests this process sent into it (failed ones included)
    remaining: int | None = None  # the lowest X-RateLimit-Remaining seen in it
    lowest_at: float = -math.inf  # when the answer with that lowest value arrived
    lost: list[float] = field(default_factory=list)  # send times of requests that failed
    # without an answer and that no later-sent request's answer has counted yet
    others: int = 0  # requests of other clients seen in it, at least
    others_since: tuple[float, int] | None = None  # when others were first seen, how many
    others_rate: float = 0.0  # their requests a second since then
    claim: int = 0  # requests it may send on the strength of the latest answer
    claimed_at: float = -math.inf  # when `claim` was last set
    exhausted: bool = False  # a 429 said so
    end_low: float = -math.inf  # the window ends after this moment
    end_high: float = math.inf  # and no later than this one
    probes: int = 0  # phase probes sent into it
    probe_at: float | None = None  # when the next one goes
    probe_out: bool = False  # one is in flight
    owner_at: float | None = None  # when an answer said TAIL_OWNER were left (see Pacer)


class Pacer:
    """When the next request may go, learnt from the rate-limit headers of the answers.

    * Each window's end is bracketed from the Reset values: a value r in the answer to a request
      sent at `s` and answered at `a` puts the end in (s + r - 1, a + r]. While that bracket is
      wide, the window's last few requests go where its whole-second value should step down,
      each halving the bracket; the next window's first requests go just after it.
    * Remaining counts the key's budget. What it lost beyond this process's own requests is
      other clients' use; their requests still on the way are guessed from their rate and the
      age of the news. With no other client in the last window, the process opens a window
      with one request (a job may have started since and taken it) and, alone, takes all the
      key has left. With others, it sends at the start of a window what it used of the last
      (its own requests over all the key's, the others rounded up; if it may be opening the
      window late, its boundary not yet pinned, one request first and the rest once that
      answer shows the key has them), then claims a fifth of what is left on each answer,
      and near the end one request at a time, so that uncoordinated jobs on one key stay
      within it together. The last `TAIL_OWNER` requests of a window
      belong to the one client whose answer said that many were left (each value of Remaining
      is in exactly one answer): the others stop there, it waits for their last requests to
      arrive and then sends the rest but `TAIL_RESERVE`, so that the window is used without a
      refusal. In its first window a process is as careful, since jobs started with it may not
      show yet. A process that waits on its guess of the others' requests while its news
      grows old sends one request to renew it (they may all be waiting on such guesses).
      A window that ended with requests left that this process did not see used (its news
      was old by then) counts as shared: a job opening windows late may have used them.
    * `share` (rate_limit_share) caps this process at that fraction of the limit in every
      window; other jobs are expected to keep to theirs, so it may use its share at once, as
      long as the key (as last seen) has it.
    * A request that failed without an answer counts as spent; a 429's Retry-After holds every
      request back.
    """

    def __init__(self, share: float = 1.0, workers: int = 8) -> None:
        self.share = min(max(share, 0.0), 1.0)
        self.workers = max(1, workers)
        self.limit: int | None = None  # X-RateLimit-Limit, once seen
        self.unlimited = False  # answers carry no rate-limit headers: nothing to pace on
        self.window_seconds = 1.0  # the longest Reset seen: the window's length, rounded up
        self.in_flight = 0
        self.rtt = 0.0  # a recent long round trip: how stale an answer's news can be
        self.hold_until = -math.inf  # Retry-After
        self.window: _Window | None = None
        self._previous: tuple[int, int] | None = None  # (own, others) in the last window
        self._sends: deque[float] = deque(maxlen=4096)  # recent send times

    def next_send(self, now: float) -> float | None:
        """Record a request sent now and return None, or return when to ask again.

        `math.inf` means: after the next answer (or pause).
        """
        when = self._when(now)
        if when is not None:
            return when
        window = self.window
        if window is not None:
            window.sent += 1
            if window.allocation > 0:
                window.allocation -= 1
            else:
                window.claim = max(0, window.claim - 1)
            if window.probe_at is not None:
                window.probes, window.probe_at, window.probe_out = window.probes + 1, None, True
        self.in_flight += 1
        self._sends.append(now)
        return None

    def answered(self, sent_at: float, now: float, headers: t.Mapping[str, str] | None) -> None:
        """A request sent at `sent_at` got an answer with these headers, or failed (None)."""
        self.in_flight = max(0, self.in_flight - 1)
        window = self.window
        if window is not None and sent_at >= window.opened:
            window.probe_out = False
            if headers is None:
                window.lost.append(sent_at)  # the key may have counted it: spent until known
        if headers is None:
            return
        limit = _number(headers.get("X-RateLimit-Limit"))
        remaining = _number(headers.get("X-RateLimit-Remaining"))
        reset = _number(headers.get("X-RateLimit-Reset"))
        if limit is None or remaining is None or reset is None or limit < 1:
            self.unlimited = self.limit is None
            return
        self.unlimited = False
        self.limit = int(limit)
        self.rtt = max(now - sent_at, 0.9 * self.rtt)
        self.window_seconds = max(self.window_seconds, reset)
        if window is None:
            window = self._roll(sent_at)
        if sent_at < window.opened:
            return  # sent before this window began here: it may belong to the last one
        low, high = sent_at + reset - 1, now + reset
        rose = window.remaining is not None and remaining > window.remaining
        if reset >= 1 and (low >= window.end_high or (rose and sent_at > window.lowest_at)):
            window = self._roll(sent_at)  # the key's next window had begun when it was sent
        if reset >= 1:
            window.end_low, window.end_high = _narrow(window.end_low, window.end_high, low, high)
        if window.remaining is None or remaining <= window.remaining:
            window.remaining, window.lowest_at = int(remaining), now
            window.lost = [lost for lost in window.lost if lost >= sent_at]  # it counts the rest
            if remaining == TAIL_OWNER and self._previous and self._in_tail(window, now):
                # (Not in a first window: jobs started with this one may have many requests
                # on their way, sent on their first answers.)
                window.owner_at = now
        self._see_others(window, self.limit - int(remaining) - window.sent, now)
        if window.deferred:
            # What the key has left is known: the rest of the allocation, unless the window is
            # down to its tail, which goes one request at a time (`_left` caps it anyway).
            if not self._in_tail(window, now):
                window.allocation += window.deferred
            window.deferred = 0
        if sent_at >= window.claimed_at:
            window.claim, window.claimed_at = self._claim(window, now), now

    def pause(self, now: float, seconds: float) -> None:
        """A 429: hold every request back for `seconds`."""
        self.hold_until = max(self.hold_until, now + seconds)
        if self.window is not None and self.window.remaining == 0:
            self.window.exhausted = True

    def _when(self, now: float) -> float | None:
        """None if a request may go now, else when to look again (inf: after an answer)."""
        if now < self.hold_until:
            return self.hold_until
        if self.unlimited:
            return None
        window = self.window
        if window is None or self.limit is None:
            return math.inf if self.in_flight else None  # one alone until the first answer
        if now >= self._end(window) + BOUNDARY_MARGIN:
            window = self._roll(now)
        left = self._left(window, now)
        if left <= 0 and not self.in_flight:
            if self._refresh(window, now):
                left = self._left(window, now)
            elif self._renew(window, now):
                left = 1  # whatever the guess of others' requests on the way
        if left <= 0:
            if self.in_flight and not window.exhausted and window.sent < self._cap():
                return math.inf  # answers may show more left: in-flight requests count once
            if self._settling(window, now):
                return self._settled(window)  # then what others left may be claimed
            if window.owner_at is not None and now < self._owns_from(window):
                return self._owns_from(window)
            end = self._end(window) + BOUNDARY_MARGIN
            renew_at = self._renew_at(window)
            return renew_at if renew_at is not None and now < renew_at < end else end
        if window.probe_out:
            return math.inf
        if self.in_flight and self._in_tail(window, now):
            return math.inf
        if not self._wants_probe(window):
            window.probe_at = None
        elif window.probe_at is None:
            window.probe_at = self._probe_time(window, now)
        if window.probe_at is not None and now < window.probe_at:
            return window.probe_at
        return None

    def _end(self, window: _Window) -> float:
        """The latest moment the window can end (before any answer from it: a safe guess)."""
        if math.isinf(window.end_high):
            return window.opened + self.window_seconds + 1.0
        return window.end_high

    def _left(self, window: _Window, now: float) -> int:
        """Requests this process may still send into the window."""
        assert self.limit is not None
        if window.exhausted:
            return 0
        if self.share < 1:
            # A fixed split: the other jobs keep to theirs, so this one may use all of its
            # own share as soon as it likes, as long as the key (as last seen) has it.
            if window.remaining is None:
                return self._cap() - window.sent
            return min(self._cap() - window.sent, window.remaining - self.in_flight)
        key_left = self._key_left(window, now)
        own_left = window.allocation + window.claim
        if self._previous and window.remaining is not None and not self._contended(window, now):
            own_left = key_left  # alone in this window and the last: no one to leave any for
        return min(own_left, key_left)

    def _key_left(self, window: _Window, now: float) -> int:
        """What the key has left for this window as far as this process can tell."""
        assert self.limit is not None
        if window.remaining is None:
            return self.limit - window.sent
        unknown = self.in_flight + len(window.lost)
        return window.remaining - unknown - self._others_in_flight(window, now)

    def _see_others(self, window: _Window, others: int, now: float) -> None:
        """Other clients' requests counted in the key's window by now, at least."""
        if others <= window.others:
            return
        if window.others_since is None:
            window.others_since = (now, others)
        else:
            began, first = window.others_since
            if now - began > 0.05:
                window.others_rate = (others - first) / (now - began)
        window.others = others

    def _others_in_flight(self, window: _Window, now: float) -> int:
        """Other clients' requests on their way, which the last answer cannot count yet.

        Their rate over the age of the news (since the last answer, plus the longest recent
        round trip); before it is known, as many as this process has in flight (also in its
        first window, where others may be starting unseen).
        """
        if window.others_rate:
            age = max(0.0, now - window.lowest_at) + self.rtt
            guess = math.ceil(window.others_rate * age)
            if self._previous:  # not more than they used in the last window, unless seen to
                expected = self._previous[1] - window.others
                guess = min(guess, max(expected, math.ceil(window.others_rate * self.rtt)))
            return guess
        if window.others > 0 or not self._previous:
            return self.in_flight
        return 0

    def _cap(self) -> int:
        """Requests this process may send into one window by its share."""
        assert self.limit is not None
        if self.share >= 1:
            return self.limit + 1  # the key's Remaining alone decides
        return max(1, math.floor(self.share * self.limit + 1e-9))

    def _settled(self, window: _Window) -> float:
        """When other clients have surely sent what they send at the window's start."""
        return window.opened + min(1.0, 0.15 * self.window_seconds)

    def _settling(self, window: _Window, now: float) -> bool:
        return self._previous is not None and self._previous[1] > 0 and now < self._settled(window)

    def _contended(self, window: _Window, now: float) -> bool:
        """Whether other clients use the key in this window or did in the last one.

        (Their use in this one may not show yet: the answers' news is as old as their trip.)
        """
        return window.others > 0 or (self._previous is not None and self._previous[1] > 0)

    def _in_tail(self, window: _Window, now: float) -> bool:
        """Whether others use the key and it is nearly spent: then one request at a time.

        Each goes on a fresh answer, so that no client acts for long on what it saw last.
        """
        if self.share < 1 or window.remaining is None or not self._contended(window, now):
            return False
        return self._key_left(window, now) < TAIL_WORKERS * self.workers

    def _owns_from(self, window: _Window) -> float:
        """When the other clients' last requests into the window have surely arrived."""
        assert window.owner_at is not None
        return window.owner_at + 2 * self.rtt

    def _claim(self, window: _Window, now: float) -> int:
        """Requests the latest answer allows beyond the window's allocation."""
        assert window.remaining is not None
        left = self._key_left(window, now)
        contended = self._contended(window, now)
        if not contended and self._previous:
            return max(0, left)  # alone in this window and the last
        # Other clients claim from what they see too, or (in the first window) may be starting
        # unseen: take a fraction of what is left, and none of what the others are expected
        # to send at the start of the window.
        if self._previous and self._settling(window, now):
            left -= max(0, self._previous[1] - window.others)
        if contended and self._in_tail(window, now):
            if window.owner_at is not None:
                return 1 if now >= self._owns_from(window) and left > TAIL_RESERVE else 0
            return 1 if window.remaining > TAIL_OWNER and left > 0 else 0
        return max(0, left // CLAIM_DIVISOR)

    def _refresh(self, window: _Window, now: float) -> bool:
        """With nothing in flight to bring news, allow one request if the last news allows any.

        Its answer then says how much more this process may claim (others may have finished).
        """
        if window.remaining is None or window.exhausted or window.claim > 0:
            return False
        if self._claim(window, now) <= 0:
            return False
        window.claim, window.claimed_at = 1, now
        return True

    def _renew(self, window: _Window, now: float) -> bool:
        """With nothing in flight, allow one request to renew stale news (see `_renew_at`)."""
        renew_at = self._renew_at(window)
        return renew_at is not None and now >= renew_at

    def _renew_at(self, window: _Window) -> float | None:
        """When one request may go on the key's last news, grown too old; None: never.

        Until then, other clients' requests on the way are guessed from their rate over the
        news's age, which keeps growing while no answer comes: clients that all wait on that
        guess would leave the rest of the window unused. Only while the key had plenty left
        and no one owns the tail: it may have been spent since down to its tail, and the
        tail's owner leaves `TAIL_RESERVE` of it, one such request from each of up to that
        many other clients. Never with a share: other jobs keep to theirs, this one to its own.
        """
        if self.share < 1 or window.remaining is None or window.exhausted:
            return None
        if window.owner_at is not None or window.remaining <= 2 * TAIL_OWNER:
            return None
        return self._stale_at(window)

    def _stale_at(self, window: _Window) -> float:
        """When the key's last news of the window is too old to act on alone."""
        return window.lowest_at + STALE_ROUND_TRIPS * self.rtt + STALE_SLACK

    def _roll(self, opened: float) -> _Window:
        """Begin the key's next window here, with what may go before its first answer."""
        assert self.limit is not None
        old = self.window
        if old is not None:
            # Others seen at all may have used all this process did not: their requests after
            # its last answer of the window are not counted in `others`.
            others = max(old.others, self.limit - old.sent) if old.others else 0
            self._previous = (old.sent, others or self._unseen_rest(old))
        # Requests sent since `opened`, or still in flight, may count in this window.
        sent = max(sum(1 for at in self._sends if at >= opened), self.in_flight)
        if self._previous is None:
            allocation = 0  # the first answer decides (see `_claim`)
        elif not self._previous[1] and self.share >= 1:
            # Alone in the last window: one request learns whether a job has started since
            # (it may have taken the window already), and its answer releases the rest.
            allocation = 1
        else:
            # At least one, to learn the window from its answer.
            allocation = max(1, min(self.limit // _clients(*self._previous), self._cap()) - sent)
        deferred = 0
        if allocation > 1 and self.share >= 1 and self._opened_late(old, opened):
            # The window may have begun long before, and others (a job started since among
            # them) may have spent it: one request first, and the rest only as far as its
            # answer shows the key has left.
            allocation, deferred = 1, allocation - 1
        self.window = _Window(opened=opened, allocation=allocation, deferred=deferred, sent=sent)
        return self.window

    def _unseen_rest(self, window: _Window) -> int:
        """What the window had left at its end as far as old news tells (else 0): others'.

        What it had left when this process last heard of it, if that news was old when the
        window ended: others may have used it unseen. A job that opens windows late (its
        phase unknown) sends its requests after this one's last answer; counted as alone,
        this one would take the next window whole and leave that job's requests none.
        """
        if window.remaining is None or window.remaining <= TAIL_RESERVE:
            return 0
        return window.remaining if window.end_low > self._stale_at(window) else 0

    @staticmethod
    def _opened_late(old: _Window | None, opened: float) -> bool:
        """Whether a window opened at `opened` may have begun well before then.

        So it may while the phase is not pinned (a Reset of 1 s puts the boundary anywhere in
        the next second), or when the process rolls the window late (it had nothing to send).
        """
        return old is None or opened - old.end_low > PHASE_PRECISION + BOUNDARY_MARGIN

    def _wants_probe(self, window: _Window) -> bool:
        """Whether the next request should go where the Reset value steps down.

        So do the window's last few requests, whichever ends it: the key's budget or the share.
        Without a share only Remaining says the window is ending: an API that reports a limit
        it does not enforce (Remaining stays up) was held up to a second per probe once this
        process had sent `X-RateLimit-Limit` requests.
        """
        if window.remaining is None or window.probes >= PHASE_PROBES:
            return False
        if math.isinf(window.end_high) or window.end_high - window.end_low <= PHASE_PRECISION:
            return False
        last = window.remaining - self.in_flight
        if self.share < 1:
            last = min(last, self._cap() - window.sent)
        return last <= PHASE_PROBES - window.probes

    @staticmethod
    def _probe_time(window: _Window, now: float) -> float | None:
        """The earliest moment ahead a whole number of seconds before the bracket's middle."""
        middle = (window.end_low + window.end_high) / 2
        steps = math.ceil(middle - now - 0.002) - 1
        return None if steps < 1 else middle - steps


def _clients(own: int, others: int) -> int:
    """How many clients like this one would use the key as seen (the others rounded up)."""
    return 1 + math.ceil(others / max(own, 1)) if others > 0 else 1


def _narrow(low: float, high: float, new_low: float, new_high: float) -> tuple[float, float]:
    """Intersect two brackets of the window's end; if they disagree, trust the newer one."""
    low, high = max(low, new_low), min(high, new_high)
    return (low, high) if low < high else (new_low, new_high)


class RateLimiter:
    """The run's `Pacer`, shared by its worker threads: `acquire` blocks, `release` follows."""

    def __init__(
        self,
        reserve: int,
        share: float = 1.0,
        clock: t.Callable[[], float] = time.monotonic,
    ) -> None:
        self._pacer = Pacer(share=share, workers=reserve)
        self._clock = clock
        self._changed = threading.Condition()
        self._sent_at = threading.local()
        self.waited_seconds = 0.0

    def acquire(self) -> None:
        """Block until this worker may send its next request; `release` must follow."""
        began = self._clock()
        with self._changed:
            while True:
                now = self._clock()
                when = self._pacer.next_send(now)
                if when is None:
                    break
                self._changed.wait(None if math.isinf(when) else max(when - now, 0.0))
            self.waited_seconds += now - began
        self._sent_at.value = now

    def release(self, headers: t.Mapping[str, str] | None) -> None:
        """The request is answered (headers) or failed (None): learn from it."""
        sent_at = getattr(self._sent_at, "value", self._clock())
        with self._changed:
            self._pacer.answered(sent_at, self._clock(), headers)
            self._changed.notify_all()

    def pause(self, seconds: float) -> None:
        """Hold every worker back for `seconds` (a 429's Retry-After)."""
        with self._changed:
            self._pacer.pause(self._clock(), seconds)
            self._changed.notify_all()


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
