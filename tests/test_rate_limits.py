"""Pacing to the API key's rate-limit windows: alone, shared with jobs it cannot see, by share.

The pacing logic (`Pacer`) runs first against a simulated API on a simulated clock: several
clients, each with eight workers, send as fast as their pacers let them. Then the real tap runs
as real processes against the real sandbox, one job and three at once on one key, and the
sandbox's counts of 429s and of requests inside a Retry-After say how they did.
"""

from __future__ import annotations

import heapq
import math
import random
import threading
import typing as t
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tap_analytics.ratelimit import TAIL_RESERVE, Pacer, RateLimiter
from tap_analytics.sandbox import SandboxServer
from tests.taprun import STREAMS, TapRun, ids, run_tap, tap_config

# --- a simulated API and clients ---------------------------------------------------------------


@dataclass
class FakeApi:
    """Fixed windows of `limit` requests: aligned to the clock at `phase`, or opened by a
    key's first request after the last one closed. Headers as the reference says."""

    limit: int
    window: float
    aligned: bool = True
    phase: float = 0.0
    start: float = -math.inf
    count: int = 0
    refused: int = 0
    inside_retry_after: int = 0
    retry_until: float = -math.inf
    admitted: Counter[float] = field(default_factory=Counter)  # per window, by its start

    def _roll(self, now: float) -> None:
        if self.aligned:
            start = math.floor((now - self.phase) / self.window) * self.window + self.phase
            if start != self.start:
                self.start, self.count = start, 0
        elif now - self.start >= self.window:
            self.start, self.count = now, 0

    def request(self, now: float) -> tuple[int, dict[str, str] | None]:
        """Admit or refuse a request arriving now; the status and the rate-limit headers
        (None: the answer is lost)."""
        if now < self.retry_until:
            self.inside_retry_after += 1
        self._roll(now)
        reset = str(max(0, math.ceil(self.start + self.window - now)))
        if self.count >= self.limit:
            self.refused += 1
            retry_after = max(1, math.ceil(self.start + self.window - now))
            self.retry_until = now + retry_after
            headers = {"Retry-After": str(retry_after), "X-RateLimit-Remaining": "0"}
            return 429, {
                **headers,
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Reset": reset,
            }
        self.count += 1
        self.admitted[round(self.start, 6)] += 1
        return 200, {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - self.count),
            "X-RateLimit-Reset": reset,
        }


@dataclass
class Client:
    """A job: its pacer, its workers, the pages it must fetch."""

    pacer: Pacer
    pages: int
    workers: int = 8
    started: float = 0.0
    done: int = 0
    finished: float = math.inf
    sends: list[float] = field(default_factory=list)
    holds: list[tuple[float, float]] = field(default_factory=list)  # Retry-Afters it was given


def simulate(
    api: FakeApi,
    clients: list[Client],
    latency: float = 0.01,
    fail_every: int = 0,
    until: float = 600.0,
    jitter: float = 0.0,
) -> None:
    """Run the clients' workers against the API until every page is fetched.

    A request reaches the API `latency` / 2 after it is sent and is answered `latency` after;
    with `jitter`, each trip takes up to that many times longer (seeded: a loaded server).
    Every answer wakes all of its client's waiting workers, as `RateLimiter` does. With
    `fail_every`, every n-th request is admitted but its answer is lost (no headers).
    """
    events: list[tuple[float, int, int, int, int]] = []  # (time, order, client, worker, token)
    order = iter(range(1 << 40))
    answers: dict[int, tuple[float, int, dict[str, str] | None]] = {}  # order -> sent, answer
    tokens: dict[tuple[int, int], int] = {}  # a worker's valid wake-up; -1: busy or ended
    outstanding = [0] * len(clients)  # pages sent and not fetched yet
    rng = random.Random(7)
    sent_total = 0

    def wake(index: int, worker: int, at: float) -> None:
        token = next(order)
        tokens[index, worker] = token
        heapq.heappush(events, (at, token, index, worker, token))

    for index, client in enumerate(clients):
        for worker in range(client.workers):
            wake(index, worker, client.started)
    while events:
        now, number, index, worker, token = heapq.heappop(events)
        assert now < until, "the simulated run does not end"
        client = clients[index]
        if number in answers:  # an answer to this worker's request
            sent_at, status, headers = answers.pop(number)
            client.pacer.answered(sent_at, now, headers)
            outstanding[index] -= 1
            if status == 429:
                assert headers is not None
                seconds = float(headers["Retry-After"])
                client.pacer.pause(now, seconds)
                client.holds.append((now, now + seconds))
            elif status == 200:
                client.done += 1
                if client.done == client.pages:
                    client.finished = now
            for other in range(client.workers):  # notify_all: the waiting ones look again
                if (other == worker or tokens[index, other] != -1) and tokens[index, other] != -2:
                    wake(index, other, now)
            continue
        if tokens.get((index, worker)) != token:
            continue  # a superseded wake-up
        if client.done + outstanding[index] >= client.pages:
            tokens[index, worker] = -2  # no page left to send: the worker ends
            continue
        when = client.pacer.next_send(now)
        if when is None:
            client.sends.append(now)
            outstanding[index] += 1
            sent_total += 1
            trip = latency * (1 + jitter * rng.random())
            status, headers = api.request(
                now + trip * rng.uniform(0.2, 0.8) if jitter else now + trip / 2
            )
            if fail_every and sent_total % fail_every == 0:
                status, headers = 0, None
            tokens[index, worker] = -1  # busy until its answer
            number = next(order)
            answers[number] = (now, status, headers)
            heapq.heappush(events, (now + trip, number, index, worker, -1))
        elif not math.isinf(when):
            wake(index, worker, when)
        # else: it waits for an answer (any answer of its client wakes it)


def floor_of(api: FakeApi, pages: int, first: float) -> float:
    """When the last window the pages need starts, counted from the first request."""
    windows = math.ceil(pages / api.limit)
    if not api.aligned:
        return (windows - 1) * api.window
    first_end = math.floor((first - api.phase) / api.window) * api.window + api.phase + api.window
    return first_end - first + (windows - 2) * api.window


def first_request(clients: list[Client]) -> float:
    return min(send for client in clients for send in client.sends)


def last_page(clients: list[Client]) -> float:
    return max(client.finished for client in clients)


# --- the pacing logic ---------------------------------------------------------------------------


@pytest.mark.parametrize("aligned", [True, False], ids=["clock windows", "first-request windows"])
def test_one_job_uses_every_window_whole_and_is_never_refused(aligned: bool) -> None:
    api = FakeApi(limit=60, window=6.0, aligned=aligned, phase=0.6)
    client = Client(Pacer(), pages=265, started=0.3)
    simulate(api, [client])
    assert api.refused == 0
    start = first_request([client])
    # Five windows of 60 for 265 pages: the last one starts at the floor, and its 25 pages
    # take a few round trips; learning each window's phase costs little more.
    assert last_page([client]) - start <= 1.1 * floor_of(api, 265, start)
    used = [api.admitted[start] for start in sorted(api.admitted)]
    # The windows between are used whole, but the second may leave the tail's reserve: what
    # the first (a careful one) left went unseen, and others may have used it.
    assert used[1] >= 60 - TAIL_RESERVE, used
    assert used[2:-1] == [60] * (len(used) - 3), used


def test_the_next_window_starts_right_at_the_boundary() -> None:
    api = FakeApi(limit=60, window=6.0, aligned=True, phase=0.25)
    client = Client(Pacer(), pages=600)
    simulate(api, [client], latency=0.004)
    boundaries = [api.phase + 6.0 * k for k in range(1, 9)]
    lateness = [min(s for s in client.sends if s >= b) - b for b in boundaries]
    assert api.refused == 0
    # After the first window, the phase is pinned from where the Reset value steps down.
    assert max(lateness[1:]) < 0.1, lateness


@pytest.mark.parametrize("aligned", [True, False], ids=["clock windows", "first-request windows"])
def test_three_uncoordinated_jobs_share_a_key_without_a_refusal(aligned: bool) -> None:
    api = FakeApi(limit=60, window=6.0, aligned=aligned, phase=0.9)
    clients = [Client(Pacer(), pages=92, started=0.05 * k) for k in range(3)]
    simulate(api, clients, latency=0.02)
    assert api.refused == 0
    assert api.inside_retry_after == 0
    start = first_request(clients)
    assert last_page(clients) - start <= 1.2 * floor_of(api, 3 * 92, start)


@pytest.mark.parametrize("jitter", [3, 10, 30])
@pytest.mark.parametrize("aligned", [True, False], ids=["clock windows", "first-request windows"])
def test_three_jobs_on_a_loaded_server_are_not_refused_either(aligned: bool, jitter: int) -> None:
    """Round trips of up to 30x the usual: each job's news of the others is old."""
    api = FakeApi(limit=60, window=6.0, aligned=aligned, phase=0.9)
    clients = [Client(Pacer(), pages=92, started=0.05 * k) for k in range(3)]
    simulate(api, clients, latency=0.01, jitter=jitter)
    assert api.refused == 0
    assert api.inside_retry_after == 0


def test_a_job_joining_a_busy_key_gets_a_part_of_it_without_refusals_after_its_first() -> None:
    api = FakeApi(limit=60, window=6.0, aligned=True)
    first = Client(Pacer(), pages=400)
    late = Client(Pacer(), pages=100, started=13.0)
    simulate(api, [first, late])
    # Its first request goes out blind and may find the window spent; none after it.
    assert api.refused <= 1
    # A part, not a fair half: each job starts a window with what it used in the last.
    assert len([s for s in late.sends if s < first.finished]) >= 15


@pytest.mark.parametrize(
    ("starts", "latency"), [((1.9, 1.9, 2.01), 0.005), ((1.85, 1.9, 2.05), 0.02)]
)
def test_jobs_that_do_not_know_where_the_window_began_ask_before_they_spend_it(
    starts: tuple[float, float, float], latency: float
) -> None:
    """Two jobs start at the end of a window: a Reset of 1 s puts its end anywhere in the next
    second, so they open the next window up to a second late. A third job, started just after
    the boundary, has taken most of it by then: the shares of the last window the two sent at
    once were refused (6 x 429 here, as in a CI run of the three jobs against the sandbox)."""
    api = FakeApi(limit=20, window=2.0, aligned=True)
    clients = [Client(Pacer(), pages=15, started=start) for start in starts]
    simulate(api, clients, latency=latency)
    assert api.refused == 0
    assert api.inside_retry_after == 0


@pytest.mark.parametrize(
    ("starts", "aligned"), [((1.9, 1.9, 2.01), True), ((1.7, 1.98, 2.02), False)]
)
def test_a_job_that_did_not_see_its_window_spent_does_not_take_the_next_whole(
    starts: tuple[float, float, float], aligned: bool
) -> None:
    """Two jobs start just before a boundary and, their phase unknown, send one request a
    window nearly a second late: after the third job's last answer. It saw the rest of its
    window left, took itself to be alone and spent the next window whole, and the two late
    requests were refused (1-2 x 429 in 6 of 72 simulated start times before)."""
    api = FakeApi(limit=20, window=2.0, aligned=aligned)
    clients = [Client(Pacer(), pages=40, started=start) for start in starts]
    simulate(api, clients, latency=0.005)
    assert api.refused == 0
    assert api.inside_retry_after == 0


def test_a_share_caps_every_window_and_the_shares_fill_the_key() -> None:
    api = FakeApi(limit=60, window=6.0, aligned=True, phase=0.4)
    clients = [Client(Pacer(share=1 / 3), pages=92) for _ in range(3)]
    simulate(api, clients)
    assert api.refused == 0
    for client in clients:
        per_window = Counter(math.floor((s - api.phase) / api.window) for s in client.sends)
        assert max(per_window.values()) == 20
    start = first_request(clients)
    assert last_page(clients) - start <= 1.1 * floor_of(api, 3 * 92, start)


def test_a_request_that_failed_without_an_answer_still_counts_against_the_window() -> None:
    api = FakeApi(limit=60, window=6.0, aligned=True)
    client = Client(Pacer(), pages=300)
    simulate(api, [client], fail_every=7)
    assert api.refused == 0


class LastAnswerLostApi(FakeApi):
    """Admits every window's last request, but its answer never arrives (a reset)."""

    def request(self, now: float) -> tuple[int, dict[str, str] | None]:
        status, headers = super().request(now)
        return (0, None) if status == 200 and self.count == self.limit else (status, headers)


def test_a_request_lost_after_the_last_answer_is_spent_until_an_answer_counts_it() -> None:
    """The last answer said 1 left; the request sent on it took it, but its answer was lost.
    Sending again into the window on that answer was refused."""
    api = LastAnswerLostApi(limit=60, window=6.0, aligned=True)
    simulate(api, [Client(Pacer(), pages=300)])
    assert api.refused == 0


def test_retry_after_holds_every_worker_even_when_the_window_seems_to_have_room() -> None:
    pacer = Pacer()
    assert pacer.next_send(0.0) is None
    headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "50", "X-RateLimit-Reset": "6"}
    pacer.answered(0.0, 0.01, headers)
    assert pacer.next_send(0.02) is None
    pacer.answered(0.02, 0.03, headers | {"X-RateLimit-Remaining": "0"})  # the 429's headers
    pacer.pause(0.03, 2.0)
    for now in (0.04, 1.0, 2.02):
        assert pacer.next_send(now) == 2.03  # every worker that asks is held to the end
    when = pacer.next_send(2.03)
    assert when is None or when >= 2.03


def test_without_rate_limit_headers_nothing_is_paced() -> None:
    pacer = Pacer()
    assert pacer.next_send(0.0) is None
    pacer.answered(0.0, 0.01, {"Content-Type": "application/json"})
    assert all(pacer.next_send(0.02) is None for _ in range(50))


class UnenforcedApi(FakeApi):
    """Reports a limit it never enforces: Remaining stays at the limit (a generous key, or
    the sandbox without `rate_limit`)."""

    def request(self, now: float) -> tuple[int, dict[str, str] | None]:
        self._roll(now)
        return 200, {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit),
            "X-RateLimit-Reset": str(max(0, math.ceil(self.start + self.window - now))),
        }


def test_a_limit_the_api_does_not_spend_holds_nothing_back() -> None:
    """Past `X-RateLimit-Limit` requests in a window, only Remaining says the window is ending.
    Its last requests were held to pin the window's end, up to a second each, although the
    key had all of it left: 1-3 s lost in a third of the fast-server benchmark runs."""
    api = UnenforcedApi(limit=60, window=60.0, aligned=True, phase=0.5)
    client = Client(Pacer(), pages=600, started=0.0)
    simulate(api, [client], latency=0.01)
    round_trips = client.pages / client.workers
    assert last_page([client]) - first_request([client]) <= 1.2 * round_trips * 0.01


def test_the_limiter_blocks_workers_until_their_slot() -> None:
    """The thread-safe wrapper on a fake clock: a held worker waits, an answer wakes it."""
    now = [0.0]
    limiter = RateLimiter(reserve=2, clock=lambda: now[0])
    limiter.acquire()  # the first request goes alone
    waiter = threading.Thread(target=limiter.acquire)
    waiter.start()
    waiter.join(timeout=0.2)
    assert waiter.is_alive(), "a second request went before the first was answered"
    limiter.release(
        {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59", "X-RateLimit-Reset": "6"}
    )
    waiter.join(timeout=5)
    assert not waiter.is_alive()


# --- the tap against the sandbox ----------------------------------------------------------------

#: 20 requests every 2 s and 7 x 400 records: at least two windows' worth of pages.
TIGHT = {"records_per_resource": 400, "rate_limit": 20, "rate_window": 2}


def assert_no_refusal(server: SandboxServer) -> None:
    stats = server.stats()
    assert stats["rate_limited"] == 0, stats
    assert stats["requests_in_retry_after_window"] == 0, stats
    assert stats["requests"] > TIGHT["rate_limit"], "the run fitted in one window"


@pytest.mark.parametrize("start", ["clock", "first_request"])
def test_one_job_under_the_limit_is_never_refused(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path, start: str
) -> None:
    server = start_sandbox(**TIGHT, rate_window_start=start)
    run = run_tap(tap_config(server), tmp_path)
    assert run.returncode == 0, run.stderr
    snapshot = server.snapshot()
    for stream in STREAMS:
        assert ids(run.records(stream)) == ids(snapshot[stream]), stream
    assert_no_refusal(server)


@pytest.mark.parametrize("share", [None, 1 / 3], ids=["adaptive", "rate_limit_share"])
def test_three_jobs_on_one_key_are_never_refused(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path, share: float | None
) -> None:
    """Three tap processes at once, the accounts split by user_ids, as README's Scaling out."""
    server = start_sandbox(**TIGHT, accounts=30, rate_window_start="clock")
    snapshot = server.snapshot()
    accounts = sorted(ids(snapshot["users"]))
    groups = [accounts[k::3] for k in range(3)]
    runs: list[TapRun] = []
    extra = {} if share is None else {"rate_limit_share": share}

    def job(index: int) -> None:
        workdir = tmp_path / f"job{index}"
        workdir.mkdir()
        runs.append(run_tap(tap_config(server, user_ids=groups[index], **extra), workdir))

    threads = [threading.Thread(target=job, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [run.returncode for run in runs] == [0, 0, 0], [run.stderr for run in runs]
    for stream in STREAMS:
        read = set().union(*(ids(run.records(stream)) for run in runs))
        assert read == ids(snapshot[stream]), stream
    assert_no_refusal(server)


def test_rate_limit_share_must_be_a_fraction(tmp_path: Path) -> None:
    run = run_tap({"api_key": "any", "rate_limit_share": 0}, tmp_path)
    assert run.returncode == 1
    assert any("rate_limit_share" in line for line in run.stderr.splitlines()), run.stderr
