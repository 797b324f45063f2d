"""Sharing a key's windows with a client the pacer cannot see, on a simulated API and clock.

The other client here is scripted: in chosen windows it sends a number of requests the moment
the window opens, before the paced job's first one. What the job does with the rest of each
window shows the end of a shared window (the last requests used, none refused) and the start
of one after a window alone (no blind burst into a window someone else took).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tap_analytics.ratelimit import TAIL_OWNER, TAIL_RESERVE, Pacer
from tests.test_rate_limits import Client, FakeApi, simulate


@dataclass
class CrowdedApi(FakeApi):
    """Clock-aligned windows in which another client sends `crowd[k]` requests at once when
    window k opens (k counted from 0 at `phase`)."""

    crowd: dict[int, int] = field(default_factory=dict)

    def _roll(self, now: float) -> None:
        start = self.start
        super()._roll(now)
        if self.start != start:
            others = self.crowd.get(round((self.start - self.phase) / self.window), 0)
            self.count = others
            self.admitted[round(self.start, 6)] += others


def test_a_job_sharing_a_window_uses_its_last_requests_too() -> None:
    # The other client takes 20 of every window from the second on; the job, which cannot see
    # it, has the other 40. Near the end it goes one request at a time; the answer that says
    # TAIL_OWNER are left makes it the window's owner, and it sends those too, but for the
    # TAIL_RESERVE left for clients acting on old news.
    api = CrowdedApi(limit=60, window=6.0, phase=0.0, crowd={k: 20 for k in range(1, 12)})
    client = Client(Pacer(), pages=250, started=0.2)
    simulate(api, [client], latency=0.01)
    assert api.refused == 0
    used = [api.admitted[start] for start in sorted(api.admitted)]
    # Every shared window between the first and the last is used but for the reserve.
    assert used[2:-1] == [60 - TAIL_RESERVE] * (len(used) - 3), used
    assert len(used) >= 6


def test_a_job_alone_in_the_last_window_opens_the_next_with_one_request() -> None:
    # Alone for two windows; then another client takes 59 of the third the moment it opens.
    # A blind burst of the whole limit would be refused 59 times; one request learns that
    # the window is taken (the 60th of it), and the job waits for the next.
    api = CrowdedApi(limit=60, window=6.0, phase=0.0, crowd={3: 59})
    client = Client(Pacer(), pages=200, started=0.2)
    simulate(api, [client], latency=0.01)
    assert api.refused == 0
    assert api.inside_retry_after == 0
    third = api.admitted[round(3 * api.window, 6)]
    assert third == 60
    assert not math.isinf(client.finished)


def test_jobs_that_wait_on_old_news_renew_it_rather_than_leave_the_window_unused() -> None:
    # A first window opened by the job; another client sends 30 requests in its first 0.05 s
    # and then stops, as a job would that defers to this one. The job's guess of the others'
    # requests still on their way (their burst's rate over the news's age and a round trip)
    # soon exceeds what the key has left, and it would wait for the next window on that guess
    # alone, leaving 13 requests unused. Renewing its news with one request at a time shows
    # that the others stopped: it goes on while the key has more than twice TAIL_OWNER left.
    api = FakeApi(limit=60, window=6.0, aligned=False)
    pacer = Pacer(workers=8)
    latency, step, now = 0.05, 0.005, 0.0
    answers: list[tuple[float, float, dict[str, str]]] = []  # (answered at, sent at, headers)
    while now < api.window - 0.5:
        if 0.01 <= now < 0.06:
            for _ in range(3):
                api.request(now)
        for answer in [a for a in answers if a[0] <= now]:  # in the order sent
            answers.remove(answer)
            pacer.answered(answer[1], answer[0], answer[2])
        while pacer.next_send(now) is None:
            status, headers = api.request(now)
            assert status == 200
            answers.append((now + latency, now, headers))
        now += step
    assert api.refused == 0
    assert api.count >= api.limit - 2 * TAIL_OWNER


@dataclass
class StaleApi(CrowdedApi):
    """CrowdedApi where the other client also sends one request at each of `late` (times),
    acting on news so old that it cannot know the window's tail has an owner."""

    late: list[float] = field(default_factory=list)
    refused_late: int = 0

    def request(self, now: float) -> tuple[int, dict[str, str]]:
        while self.late and self.late[0] <= now:
            at = self.late.pop(0)
            refused = self.refused
            super().request(at)
            self.refused_late += self.refused - refused
        return super().request(now)


def test_the_owner_of_a_window_tail_leaves_room_for_a_client_acting_on_old_news() -> None:
    # Another client takes 20 of every window; in the third it also sends one request 3 s in,
    # long after the job has made itself the owner of the tail and sent it. Using the tail
    # whole, the job would leave that request to be refused.
    api = StaleApi(limit=60, window=6.0, crowd={k: 20 for k in range(1, 12)}, late=[15.0])
    client = Client(Pacer(), pages=250, started=0.2)
    simulate(api, [client], latency=0.01)
    assert not api.late, "the job ended before the late request was sent"
    assert api.refused_late == 0
    assert api.refused == 0
