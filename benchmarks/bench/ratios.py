"""The ratios between contenders that the project sets goals for."""

from __future__ import annotations

from typing import Any


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ratio the project sets a goal for (or shows for information), and whether it is met."""
    a = results["scenarios"]["A"]["contenders"]
    b = results["scenarios"]["B"]["contenders"]
    c = results["scenarios"]["C"]["contenders"]
    f0 = results["scenarios"]["F0"]["contenders"]
    f = results["scenarios"]["F"]["contenders"]
    memory = results["memory"]

    def get(part: dict[str, Any], name: str, key: str) -> float | None:
        return part[name].get(key)  # absent when that contender failed

    rows = [
        (
            "A: tap records/s / bare-sequential records/s",
            _ratio(
                get(a, "tap-analytics", "records_per_s"), get(a, "bare-sequential", "records_per_s")
            ),
            ">= 0.8",
        ),
        (
            "A: same, each net of its fixed cost",
            _ratio(net_rate(results, "tap-analytics"), net_rate(results, "bare-sequential")),
            "(info)",
        ),
        (
            "B: tap wall / bare-concurrent wall",
            _ratio(get(b, "tap-analytics", "wall_s"), get(b, "bare-concurrent", "wall_s")),
            "<= 1.3",
        ),
        (
            "A: tap records/s / sdk-template records/s",
            _ratio(
                get(a, "tap-analytics", "records_per_s"), get(a, "sdk-template", "records_per_s")
            ),
            "> 1",
        ),
        (
            "B: tap records/s / sdk-template records/s",
            _ratio(
                get(b, "tap-analytics", "records_per_s"), get(b, "sdk-template", "records_per_s")
            ),
            "> 1",
        ),
        (
            "A: tap CPU / sdk-template CPU",
            _ratio(get(a, "tap-analytics", "cpu_s"), get(a, "sdk-template", "cpu_s")),
            "< 1",
        ),
        (
            "A: tap CPU / bare-sequential CPU",
            _ratio(get(a, "tap-analytics", "cpu_s"), get(a, "bare-sequential", "cpu_s")),
            "(info)",
        ),
        (
            "C: tap records/s / bare-sequential records/s, fast server",
            _ratio(
                get(c, "tap-analytics", "records_per_s"), get(c, "bare-sequential", "records_per_s")
            ),
            ">= 1.2",
        ),
        (
            "F: tap wall with 2 % faults / fault-free wall",
            _ratio(get(f, "tap-analytics", "wall_s"), get(f0, "tap-analytics", "wall_s")),
            "<= 1.5",
        ),
        (
            "F: the same, each from the first request (the tap's sync seconds)",
            _ratio(get(f, "tap-analytics", "sync_s"), get(f0, "tap-analytics", "sync_s")),
            "<= 1.5",
        ),
        (
            f"memory: tap peak RSS at {memory['data_ratio']:.0f}x the data",
            memory["rss_ratio"],
            "<= 1.25",
        ),
    ]
    out = []
    for name, value, goal in rows:
        met = None
        if value is not None and goal != "(info)":
            operator, bound = goal.split()
            met = {
                ">=": value >= float(bound),
                "<=": value <= float(bound),
                ">": value > float(bound),
                "<": value < float(bound),
            }[operator]
        out.append({"name": name, "value": value, "goal": goal, "met": met})
    return out


def net_rate(results: dict[str, Any], name: str) -> float | None:
    """A contender's records/s in scenario A once its fixed cost (start-up) is taken off."""
    a = results["scenarios"]["A"]
    wall, fixed = a["contenders"][name].get("wall_s"), results["fixed_cost"][name].get("wall_s")
    if wall is None or fixed is None or wall <= fixed:
        return None
    return a["records"] / (wall - fixed)
