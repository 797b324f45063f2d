"""The benchmark's report for people: the machine, one table per part, the ratios."""

from __future__ import annotations

from typing import Any

from bench.ratios import mb_per_thousand_accounts, net_rate


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
    out += _scenario_tables(results.get("scenarios", {}))
    if "fixed_cost" in results:
        out += _fixed_cost_table(results)
    if "memory" in results:
        memory = results["memory"]
        out += _memory_table(memory["data_grows"], "Memory flat as the data grows")
        out += _memory_table(memory["accounts_grow"], "Memory as accounts grow")
    if "limits" in results:
        out += _limits_table(results["limits"])
    out.append("")
    out.append("Ratios")
    rows = [["ratio", "value", "goal", "met"]]
    for row in results["ratios"]:
        if row["value"] is None:
            rows.append([row["name"], "n/a", row["goal"], "-"])
            continue
        met = "-" if row["goal"] == "(info)" else ("yes" if row["met"] else "NO")
        value = row["value"]
        rows.append(
            [
                row["name"],
                str(value) if isinstance(value, int) else f"{value:.2f}",
                row["goal"],
                met,
            ]
        )
    out.append(table(rows, "lrll"))
    floor = max(
        (
            s.get("rss_floor_mb", 0.0)
            for part in [
                *(x["contenders"] for x in results.get("scenarios", {}).values()),
                results.get("fixed_cost", {}),
                *(x["sizes"] for x in results.get("memory", {}).values()),
            ]
            for s in part.values()
        ),
        default=None,
    )
    if floor is not None:
        out.append(
            f"Peak RSS is the child's ru_maxrss; it cannot read below the peak of the reaper "
            f"that starts it ({floor:.1f} MB), and values within 1 MB of it are starred."
        )
    out.append("=" * 100)
    return "\n".join(out)


def _scenario_tables(scenarios: dict[str, Any]) -> list[str]:
    """One table per scenario: every contender's medians."""
    out: list[str] = []
    for scenario_result in scenarios.values():
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
    return out


def _fixed_cost_table(results: dict[str, Any]) -> list[str]:
    """Each contender against 7 x 1 record, and scenario A net of it (when A ran)."""
    fixed = results["fixed_cost"]
    out = [
        "",
        "Fixed cost - 7 x 1 record, latency 0 (start-up, imports, discovery, 7+ requests); "
        "'net' rows of scenario A subtract it",
    ]
    a = results.get("scenarios", {}).get("A")
    rows = [["contender", "wall s", "CPU s", "peak RSS MB", "A net records/s", "A net CPU us/rec"]]
    for name, s in fixed.items():
        if "failed" in s:
            rows.append([name, "FAILED", "", "", "", ""])
            continue
        net = {} if a is None else a["contenders"][name]
        rate = net_rate(results, name)
        net_cpu = net["cpu_s"] - s["cpu_s"] if "cpu_s" in net else None
        rows.append(
            [
                name,
                f"{s['wall_s']:.2f}",
                f"{s['cpu_s']:.2f}",
                _rss(s),
                "-" if rate is None else f"{rate:,.0f}",
                "-" if net_cpu is None or a is None else f"{net_cpu / a['records'] * 1e6:.1f}",
            ]
        )
    out.append(table(rows, "lrrrrr"))
    out += _failures(fixed)
    return out


def _memory_table(part: dict[str, Any], title: str) -> list[str]:
    """The tap's peak RSS at the part's two data sizes."""
    owners = f"{part['accounts']:,} accounts" if part["accounts"] else "one account per record"
    out = ["", f"{title} - tap-analytics alone, latency 0, {owners}"]
    rows = [["records/resource", "records", "accounts", "peak RSS MB", "wall s", "records/s"]]
    for size in (part["small"], part["large"]):
        s = part["sizes"][str(size)]
        if "failed" in s:
            rows.append([f"{size:,}", f"{s['records']:,}", "", "FAILED", "", ""])
            continue
        rows.append(
            [
                f"{size:,}",
                f"{s['records']:,}",
                f"{s['accounts']:,}",
                _rss(s),
                f"{s['wall_s']:.2f}",
                f"{s['records_per_s']:,.0f}",
            ]
        )
    out.append(table(rows, "rrrrrr"))
    per_thousand = mb_per_thousand_accounts(part)
    if not part["accounts"] and per_thousand is not None:
        out.append(f"  {per_thousand:.2f} MB of peak RSS per 1,000 more accounts")
    out += _failures({f"{size}/resource": s for size, s in part["sizes"].items()})
    return out


def _limits_table(limits: dict[str, Any]) -> list[str]:
    """Each rate-limit regime: its floor, its wall from the first request, its refusals."""
    out = [
        "",
        f"Rate limits - {limits['rate_limit']} requests per {limits['rate_window_s']:g} s "
        f"window, {limits['records_per_resource']:,} records/resource, {limits['accounts']} "
        f"accounts, max_concurrency {limits['max_concurrency']} a job, one run each; wall and "
        "floor from the first request",
    ]
    rows = [
        [
            "regime",
            "windows",
            "pages",
            "windows needed",
            "floor s",
            "wall s",
            "wall / floor",
            "429s",
            "inside Retry-After",
            "requests",
        ]
    ]
    for r in limits["regimes"]:
        if "failed" in r:
            rows.append([r["regime"], r["windows"], str(r["pages_needed"]), "FAILED", *[""] * 6])
            continue
        rows.append(
            [
                r["regime"],
                r["windows"],
                str(r["pages_needed"]),
                str(r["windows_needed"]),
                f"{r['floor_s']:.2f}",
                f"{r['wall_s']:.2f}",
                "-" if r["wall_over_floor"] is None else f"{r['wall_over_floor']:.2f}",
                str(r["refused_429"]),
                str(r["inside_retry_after"]),
                str(r["requests"]),
            ]
        )
    out.append(table(rows, "llrrrrrrrr"))
    out += [
        f"  {r['regime']}, {r['windows']} windows FAILED: {r['failed']}"
        for r in limits["regimes"]
        if "failed" in r
    ]
    return out


def _failures(summaries: dict[str, dict[str, Any]]) -> list[str]:
    return [f"  {name} FAILED: {s['failed']}" for name, s in summaries.items() if "failed" in s]


def _rss(summary: dict[str, Any]) -> str:
    """Peak RSS, starred when it may only show the floor inherited from the reaper."""
    floored = summary["max_rss_mb"] <= summary["rss_floor_mb"] + 1
    return f"{summary['max_rss_mb']:.1f}" + ("*" if floored else "")


def _load(values: list[float] | tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)
