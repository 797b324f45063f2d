"""Sharing a key's windows with a client the pacer cannot see, on a simulated API and clock.

The other client here is scripted: in chosen windows it sends a number of requests the moment
the window opens, before the paced job's first one. What the job does with the rest of each
window shows the end of a shared window (the last requests used, none refused) and the start
of one after a window alone (no blind burst into a window someone else took).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tap_analytics.ratelimit import Pacer
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
    # TAIL_OWNER are left makes it the window's owner, and it sends those too.
    api = CrowdedApi(limit=60, window=6.0, phase=0.0, crowd={k: 20 for k in range(1, 12)})
    client = Client(Pacer(), pages=250, started=0.2)
    simulate(api, [client], latency=0.01)
    assert api.refused == 0
    used = [api.admitted[start] for start in sorted(api.admitted)]
    # Every shared window between the first and the last is used whole.
    assert used[2:-1] == [60] * (len(used) - 3), used
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
