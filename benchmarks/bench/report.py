"""The benchmark's report for people: the machine, one table per part, the ratios."""

from __future__ import annotations

from typing import Any

from bench.ratios import net_rate


def table(rows: list[list[str]], align: str) -> str:
    """Rows as columns (align: one "l" or "r" a column), a rule under the first row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(width) if a == "l" else cell.rjust(width)
            for cell, width, a in zip(row, widths, align, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    """The whole report for people: header, one table per part, the ratios."""
    machine = results["machine"]
    out = [
        "",
        "=" * 100,
        f"tap-analytics benchmark  {machine['date']}  ({results['mode']}, "
        f"{results['settings']['rounds']} round(s), medians)",
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gb']} GB, "
        f"Linux {machine['kernel']}",
        f"python {machine['python']}, singer-sdk {machine['singer_sdk']}, requests "
        f"{machine['requests']}, msgspec {machine['msgspec']}; git {machine['git_commit']}",
        f"tap_analytics from {machine['tap_source']}, sources {machine['source_digest_start']}"
        + (
            ""
            if machine["source_digest_start"] == machine["source_digest_end"]
            else f" -> {machine['source_digest_end']}: WARNING, the tap's code changed during "
            "the run; its numbers mix two versions"
        ),
        f"load average at start {_load(machine['loadavg_start'])}, at end "
        f"{_load(machine['loadavg_end'])}; total benchmark time {results['elapsed_s']:.0f} s",
    ]
    for scenario_result in results["scenarios"].values():
        out.append("")
        out.append(
            f"Scenario {scenario_result['name']} - {scenario_result['title']}: "
            f"{scenario_result['records']:,} records ({scenario_result['records_per_resource']:,}"
            f" a resource), latency {scenario_result['latency_ms']} ms, page size 100"
            + "".join(
                f", {switch} {value}"
                for switch, value in scenario_result.get("switches", {}).items()
            )
        )
        rows = [
            [
                "contender",
                "records/s",
                "wall s (min-max)",
                "CPU s",
                "CPU us/rec",
                "peak RSS MB",
                "sandbox CPU s (%wall)",
                "requests",
                "sync s",
                "other CPU s",
            ]
        ]
        for name, s in scenario_result["contenders"].items():
            if "failed" in s:
                rows.append([name, "FAILED", *[""] * 8])
                continue
            rows.append(
                [
                    name,
                    f"{s['records_per_s']:,.0f}",
                    f"{s['wall_s']:.2f} ({s['wall_min_s']:.2f}-{s['wall_max_s']:.2f})",
                    f"{s['cpu_s']:.2f}",
                    f"{s['cpu_us_per_record']:.1f}",
                    _rss(s),
                    f"{s['sandbox_cpu_s']:.2f} ({100 * s['sandbox_cpu_s'] / s['wall_s']:.0f}%)",
                    f"{s['requests']:.0f}",
                    "-" if s.get("sync_s") is None else f"{s['sync_s']:.2f}",
                    f"{s['foreign_cpu_s']:.2f}",
                ]
            )
        out.append(table(rows, "lrrrrrrrrr"))
        out += _failures(scenario_result["contenders"])
    fixed = results["fixed_cost"]
    out.append("")
    out.append(
        "Fixed cost - 7 x 1 record, latency 0 (start-up, imports, discovery, 7+ requests); "
        "'net' rows of scenario A subtract it"
    )
    a = results["scenarios"]["A"]
    rows = [["contender", "wall s", "CPU s", "peak RSS MB", "A net records/s", "A net CPU us/rec"]]
    for name, s in fixed.items():
        if "failed" in s:
            rows.append([name, "FAILED", "", "", "", ""])
            continue
        net = a["contenders"][name]
        rate = net_rate(results, name)
        net_cpu = net["cpu_s"] - s["cpu_s"] if "cpu_s" in net else None
        rows.append(
            [
                name,
                f"{s['wall_s']:.2f}",
                f"{s['cpu_s']:.2f}",
                _rss(s),
                "-" if rate is None else f"{rate:,.0f}",
                "-" if net_cpu is None else f"{net_cpu / a['records'] * 1e6:.1f}",
            ]
        )
    out.append(table(rows, "lrrrrr"))
    out += _failures(fixed)
    memory = results["memory"]
    out.append("")
    out.append("Memory flatness - tap-analytics alone, latency 0")
    rows = [["records/resource", "records", "peak RSS MB", "wall s", "records/s"]]
    for size in (memory["small"], memory["large"]):
        s = memory["sizes"][str(size)]
        if "failed" in s:
            rows.append([f"{size:,}", f"{s['records']:,}", "FAILED", "", ""])
            continue
        rows.append(
            [
                f"{size:,}",
                f"{s['records']:,}",
                _rss(s),
                f"{s['wall_s']:.2f}",
                f"{s['records_per_s']:,.0f}",
            ]
        )
    out.append(table(rows, "rrrrr"))
    out += _failures({f"{size}/resource": s for size, s in memory["sizes"].items()})
    out.append("")
    out.append("Ratios")
    rows = [["ratio", "value", "goal", "met"]]
    for row in results["ratios"]:
        if row["value"] is None:
            rows.append([row["name"], "n/a", row["goal"], "-"])
            continue
        met = "-" if row["goal"] == "(info)" else ("yes" if row["met"] else "NO")
        rows.append([row["name"], f"{row['value']:.2f}", row["goal"], met])
    out.append(table(rows, "lrll"))
    floor = max(
        s.get("rss_floor_mb", 0.0)
        for part in [
            *(x["contenders"] for x in results["scenarios"].values()),
            results["fixed_cost"],
            results["memory"]["sizes"],
        ]
        for s in part.values()
    )
    out.append(
        f"Peak RSS is the child's ru_maxrss; it cannot read below the peak of the reaper that "
        f"starts it ({floor:.1f} MB), and values within 1 MB of it are starred."
    )
    out.append("=" * 100)
    return "\n".join(out)


def _failures(summaries: dict[str, dict[str, Any]]) -> list[str]:
    return [f"  {name} FAILED: {s['failed']}" for name, s in summaries.items() if "failed" in s]


def _rss(summary: dict[str, Any]) -> str:
    """Peak RSS, starred when it may only show the floor inherited from the reaper."""
    floored = summary["max_rss_mb"] <= summary["rss_floor_mb"] + 1
    return f"{summary['max_rss_mb']:.1f}" + ("*" if floored else "")


def _load(values: list[float] | tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)
