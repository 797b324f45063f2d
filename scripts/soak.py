"""Soak run: the tap against a large, faulty, rate-limited sandbox whose data changes under it.

    python scripts/soak.py --records 1000000 [--json report.json]

1. Starts the sandbox with `--records` records spread over the 7 resources, faults on (every
   kind, stalls longer than the tap's `request_timeout`), a rate limit that bites, data
   changing while the tap pages, and a frozen clock (changes land at the window end).
2. Runs the tap (the console script, default concurrency) to the end, reading its stdout in
   this process and keeping only `id -> updated_at` per stream (never the records), with its
   stderr in a log file; the tap's peak RSS comes from `os.wait4`.
3. Stops the changes, advances the sandbox clock by one second and runs the tap again from the
   first run's last STATE.
4. Checks that every record of the sandbox's final snapshot came out of run 1 or run 2 with
   its latest `updated_at`, and that both runs exited 0. Prints a report (`--json` writes it);
   exits 1 if anything is missing or a run failed.

The sandbox has no admin endpoint for its clock, so it runs in this process (SandboxServer in
a thread) rather than as a separate process: the memory figures are the tap's alone, measured
on its own process. The parts live in `benchmarks/soak/` (the run, the tap's output, the
check, the report) and `benchmarks/child.py` (a measured child process, as in the benchmark).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from soak.report import format_report  # benchmarks/soak, not this script
from soak.runner import soak

from tap_analytics.sandbox import FAULT_KINDS


def parse_args(argv: t.Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records",
        type=int,
        default=1_000_000,
        help="records across the 7 resources (default 1,000,000)",
    )
    parser.add_argument("--json", type=Path, help="write the report to this file as JSON")
    parser.add_argument(
        "--workdir", help="where config, states and tap logs go (default: a temp dir)"
    )
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=7200,
        help="kill a tap run still going after this many seconds (0: never)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--faults", default=",".join(FAULT_KINDS))
    parser.add_argument("--stall-seconds", type=float, default=3.0)
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=1.5,
        help="the tap's request_timeout, below --stall-seconds",
    )
    parser.add_argument(
        "--rate-limit", type=int, default=20, help="requests per window (0: unlimited)"
    )
    parser.add_argument("--rate-window", type=float, default=1.0)
    parser.add_argument("--mutate-every", type=int, default=20)
    parser.add_argument("--mutate-updates", type=int, default=2)
    parser.add_argument("--mutate-inserts", type=int, default=1)
    parser.add_argument("--mutate-deletes", type=int, default=1)
    options = parser.parse_args(argv)
    if options.records < 1:
        parser.error("--records must be at least 1")
    return options


def main(argv: t.Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    report = soak(options)
    print(format_report(report), flush=True)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
