"""The soak's report for people: each run's figures, then each stream's verdict."""

from __future__ import annotations

import typing as t


def format_report(report: dict[str, t.Any]) -> str:
    """A short report for people."""
    lines = [
        f"soak: {report['records_requested']:,} records requested "
        f"({report['records_per_resource']:,} per resource), "
        f"{report['records_in_final_snapshot']:,} in the final snapshot",
    ]
    for name in ("run1", "run2"):
        run = report[name]
        sandbox = run["sandbox"]
        faults = ", ".join(f"{k} {v}" for k, v in sandbox.get("faults", {}).items()) or "none"
        lines.append(
            f"{name}: exit {run['returncode']}, {run['records']:,} records in "
            f"{run['wall_seconds']:.1f} s = {run['records_per_second']:,} records/s, "
            f"peak RSS {run['peak_rss_mib']:.1f} MiB, CPU {run['cpu_seconds']:.1f} s, "
            f"{run['duplicates']:,} repeated ids, {run['states']:,} STATEs"
        )
        lines.append(
            f"  sandbox: {sandbox.get('requests', 0):,} requests, "
            f"{sandbox.get('rate_limited', 0):,} rate-limited (429), "
            f"{sandbox.get('mutations', 0):,} mutations; faults: {faults}"
        )
        lines.append(
            f"  tap: retries {run['tap_retries'] or '{}'}, "
            f"{run['tap_rate_limit_wait_seconds']} s waited on rate limits"
        )
    lines.append(
        f"{'stream':<24}{'snapshot':>10}{'emitted':>10}{'missing':>9}{'stale':>7}"
        f"{'run 1 alone would miss':>24}"
    )
    for name, stream in report["streams"].items():
        lines.append(
            f"{name:<24}{stream['in_snapshot']:>10,}{stream['emitted_ids']:>10,}"
            f"{stream['missing']:>9,}{stream['stale']:>7,}"
            f"{stream['missing_or_stale_after_run1_alone']:>24,}"
        )
        for example in stream["missing_examples"]:
            lines.append(f"  missing id {example}")
        for example in stream["stale_examples"]:
            lines.append(f"  stale {example}")
    verdict = "COMPLETE" if report["complete"] else "INCOMPLETE: " + "; ".join(report["problems"])
    lines.append(f"result: {verdict}")
    return "\n".join(lines)
