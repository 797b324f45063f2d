"""The in-flight limit: every worker against a slow API, fewer once the tap is CPU-bound."""

from __future__ import annotations

from tap_analytics.concurrency import (
    CPU_BOUND,
    MIN_IN_FLIGHT,
    NETWORK_BOUND,
    PAGES_PER_STEP,
    InFlightLimit,
)


def test_waiting_on_the_network_keeps_every_worker_sending() -> None:
    limit = InFlightLimit(8)
    for _ in range(5):
        limit.step(NETWORK_BOUND / 2)
    assert limit.limit == 8


def test_bound_by_the_cpu_it_halves_down_to_the_least_then_grows_back_one_by_one() -> None:
    limit = InFlightLimit(8)
    seen = []
    for _ in range(3):
        limit.step(min(1.0, CPU_BOUND + 0.05))
        seen.append(limit.limit)
    assert seen == [4, 2, MIN_IN_FLIGHT]
    for _ in range(3):
        limit.step(NETWORK_BOUND / 2)
        seen.append(limit.limit)
    assert seen[3:] == [3, 4, 5]
    limit.step((CPU_BOUND + NETWORK_BOUND) / 2)  # in between: it stays
    assert limit.limit == 5


class Recorded(InFlightLimit):
    def __init__(self) -> None:
        super().__init__(8)
        self.steps: list[float] = []

    def step(self, cpu_share: float) -> None:
        self.steps.append(cpu_share)


def test_a_step_comes_every_pages_per_step_pages_written() -> None:
    limit = Recorded()
    for _ in range(3 * PAGES_PER_STEP - 1):
        limit.page_written()
    assert len(limit.steps) == 2
    assert all(share >= 0 for share in limit.steps)
