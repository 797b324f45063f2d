"""The ratios (and counts) the project sets goals for, from whichever parts ran."""

from __future__ import annotations

from typing import Any

#: A row before its goal is judged: name, value (None: not measured), goal ("(info)": none).
Row = tuple[str, float | int | None, str]


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ratio the project sets a goal for (or shows for information), and whether it is met."""
    rows = [
        *(_scenario_rows(results) if "scenarios" in results else []),
        *(_memory_rows(results["memory"]) if "memory" in results else []),
        *(_limit_rows(results["limits"]) if "limits" in results else []),
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
                "=": value == float(bound),
            }[operator]
        out.append({"name": name, "value": value, "goal": goal, "met": met})
    return out


def _scenario_rows(results: dict[str, Any]) -> list[Row]:
    """Scenarios A, B, C, F0 and F."""
    a = results["scenarios"]["A"]["contenders"]
    b = results["scenarios"]["B"]["contenders"]
    c = results["scenarios"]["C"]["contenders"]
    f0 = results["scenarios"]["F0"]["contenders"]
    f = results["scenarios"]["F"]["contenders"]

    def get(part: dict[str, Any], name: str, key: str) -> float | None:
        return part[name].get(key)  # absent when that contender failed

    return [
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
    ]


def mb_per_thousand_accounts(part: dict[str, Any]) -> float | None:
    """The peak RSS the larger size adds per 1,000 more accounts (None if a size failed)."""
    small, large = (part["sizes"][str(part[size])] for size in ("small", "large"))
    if "failed" in small or "failed" in large or large["accounts"] <= small["accounts"]:
        return None
    added = float(large["max_rss_mb"] - small["max_rss_mb"])
    return added / (int(large["accounts"] - small["accounts"]) / 1000)


def _memory_rows(memory: dict[str, Any]) -> list[Row]:
    """Memory flat as the data grows (fixed accounts), and as the accounts grow with it."""
    flat, grown = memory["data_grows"], memory["accounts_grow"]
    return [
        (
            f"memory flat as the data grows: tap peak RSS at {flat['data_ratio']:.0f}x the "
            f"records, {flat['accounts']:,} accounts",
            flat["rss_ratio"],
            "<= 1.25",
        ),
        (
            f"memory as accounts grow: tap peak RSS at {grown['data_ratio']:.0f}x the records "
            "and accounts",
            grown["rss_ratio"],
            "(info)",
        ),
        (
            "memory as accounts grow: MB of peak RSS per 1,000 more accounts",
            mb_per_thousand_accounts(grown),
            "(info)",
        ),
    ]


def _limit_rows(limits: dict[str, Any]) -> list[Row]:
    """Each rate-limit regime against issue 13's goals: wall / floor, 429s, Retry-After."""
    rows: list[Row] = []
    for regime in limits["regimes"]:
        name = f"limits, {regime['windows']} windows, {regime['regime']}"
        one_job = regime["jobs"] == 1
        rows += [
            (
                f"{name}: wall / floor" + ("" if one_job else " of the combined pages"),
                regime.get("wall_over_floor"),
                "<= 1.1" if one_job else "<= 1.2",
            ),
            (f"{name}: 429s", regime.get("refused_429"), "= 0"),
        ]
        if not one_job:
            rows.append(
                (f"{name}: requests inside Retry-After", regime.get("inside_retry_after"), "= 0")
            )
    return rows


def net_rate(results: dict[str, Any], name: str) -> float | None:
    """A contender's records/s in scenario A once its fixed cost (start-up) is taken off."""
    if "scenarios" not in results or "fixed_cost" not in results:
        return None
    a = results["scenarios"]["A"]
    wall, fixed = a["contenders"][name].get("wall_s"), results["fixed_cost"][name].get("wall_s")
    if wall is None or fixed is None or wall <= fixed:
        return None
    return a["records"] / (wall - fixed)
