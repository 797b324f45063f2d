"""How many requests to keep in flight: all the workers, unless the tap is bound by its CPU.

Against a slow API the workers wait on the network, and `max_concurrency` of them overlap its
latency. Against a fast one (a page in well under a millisecond) they wait on the CPU instead:
every worker decodes its pages under the interpreter lock the writer needs too, so once the
process keeps a core busy, more workers only add switching and slow the writer down (measured
with the sandbox's `fast_pages`: 2 in flight write about 13 % faster than 8). Latencies cannot
tell the two apart, as they grow with the lock's queue; the process's CPU time can. Every
`PAGES_PER_STEP` pages written, if the process used more than `CPU_BOUND` of a core since the
last step, half as many requests may be in flight (never fewer than `MIN_IN_FLIGHT`); if less
than `NETWORK_BOUND`, one more (never more than the workers, where it starts, so a slow API
never waits for the limit to grow).
"""

from __future__ import annotations

import time

#: Requests in flight however fast the API: one being answered while the next is sent.
MIN_IN_FLIGHT = 2
#: Pages written between two steps of the limit.
PAGES_PER_STEP = 16
#: The share of a core above which the process counts as bound by its CPU...
CPU_BOUND = 0.9
#: ... and under which it waits on the network.
NETWORK_BOUND = 0.7


class InFlightLimit:
    """Requests that may be in flight, from the process's use of the CPU as pages are written."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.limit = workers
        self._pages = 0
        self._since = (time.monotonic(), time.process_time())

    def page_written(self) -> None:
        """The writer has taken another page."""
        self._pages += 1
        if self._pages < PAGES_PER_STEP:
            return
        wall, cpu = time.monotonic(), time.process_time()
        self.step((cpu - self._since[1]) / max(wall - self._since[0], 1e-9))
        self._pages = 0
        self._since = (wall, cpu)

    def step(self, cpu_share: float) -> None:
        """The process used `cpu_share` of a core over the last step."""
        if cpu_share > CPU_BOUND:
            self.limit = max(MIN_IN_FLIGHT, (self.limit + 1) // 2)
        elif cpu_share < NETWORK_BOUND:
            self.limit = min(self.workers, self.limit + 1)
