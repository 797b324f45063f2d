"""Performance benchmark of tap-analytics: `python benchmarks/run.py [--quick] [--json PATH]`.

Against the sandbox API (one server process per scenario), it runs four contenders as separate
processes, each reading all seven resources completely with pages of 100:

- `tap-analytics`    the real console script, default settings, max_concurrency 8
- `bare-sequential`  requests + json, one request at a time (benchmarks/bare_client.py)
- `bare-concurrent`  the same with 8 requests in flight (benchmarks/bare_client.py)
- `sdk-template`     a plain singer-sdk tap as the cookiecutter suggests
                     (benchmarks/sdk_template_tap.py)

Scenario A has no latency and more data (throughput); scenario B adds 50 ms to every response
(latency hiding). Scenario C is a fast server (`fast_pages`: each page served from its kept
JSON and gzip bytes, well under a millisecond), where the client's own CPU per record is the
limit: the tap against the bare sequential loop. Scenarios F0 and F are the tap alone at 30 ms
latency, without faults and with 2 % faults of every kind but 429 (5xx, proxy 502-504 pages,
resets, stalls of 2-4 s, cut-off bodies), on issue 13's data (26,000 records, 150 accounts).
Each scenario starts with an untimed verification pass (every contender once,
stdout to a file, records counted per stream against the sandbox's totals), then runs
interleaved rounds, each running every contender once in a rotating order; medians are
reported. Memory runs the tap alone at two data sizes 16x apart and compares peak RSS, once
with 200 accounts (the data grows) and once with an account per record (the accounts grow too).
The rate limits part runs issue 13's regimes against a sandbox enforcing 60 requests per 6 s
window: one job, and three jobs on one key (adaptive, and with rate_limit_share 1/3), under
clock-aligned windows and windows from a key's first request (bench/limits.py).
`--only limits` (or any of scenarios, fixed, memory, limits) runs only those parts.

Wall time includes each process's start-up (imports). CPU time and peak RSS come from
`os.wait4` on the child, run by a small reaper (benchmarks/child.py, shared with the soak run).
The sandbox's own CPU during each run is read from /proc. The contenders run on a venv of their
own (.venv-bench: the tap installed as users install it, runtime dependencies only).

The parts live in benchmarks/bench/: machine (interpreter, load), sandbox_process, contenders
(commands, counts, output checks), runs (one timed run, medians), scenarios, limits, ratios,
report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import log
from bench.contenders import contenders
from bench.limits import MODES, rate_limits
from bench.machine import (
    QUIET_CPUS,
    code_fingerprint,
    machine_info,
    tap_executable,
    tap_source,
    venv_python,
)
from bench.ratios import ratios
from bench.report import report
from bench.runs import OPTIONS
from bench.scenarios import Setup, fixed_cost, memory_flatness, scenario

FULL: dict[str, Any] = {
    "rounds": 3,
    "a_records": 20_000,
    "b_records": 2_000,
    "b_latency_ms": 50,
    "memory_small": 2_500,
    "memory_large": 40_000,
    "c_records": 20_000,
    "f_records": 5_140,
    "limits_records": 5_140,
    "limits_windows": MODES,
}
QUICK: dict[str, Any] = {
    "rounds": 1,
    "a_records": 2_500,
    "b_records": 300,
    "b_latency_ms": 50,
    "memory_small": 500,
    "memory_large": 8_000,
    "c_records": 2_500,
    "f_records": 1_000,
    # Two windows' worth of pages (79), under clock-aligned windows only: a smoke test.
    "limits_records": 1_500,
    "limits_windows": ("clock",),
}
#: The parts of a run, in order (--only picks some).
PARTS = ("scenarios", "fixed", "memory", "limits")
#: Accounts owning the records in scenarios C and F: as many accounts as records would make
#: the tap's STATE (which lists the accounts read) the largest message it writes.
ACCOUNTS = 150
#: Accounts owning the records when memory should see only the data grow (the tap keeps
#: coverage per account: with an account per record its memory grows with the accounts).
MEMORY_ACCOUNTS = 200
FAULTS = {
    "fault_rate": 0.02,
    "faults": ("500", "502", "503", "504", "reset", "stall", "truncated"),
    "stall_seconds": 2,
    "stall_seconds_max": 4,
}
FAULTS_LATENCY_MS = 30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (about 2 min)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("--python", help="interpreter of the contenders (default .venv-bench)")
    parser.add_argument(
        "--only",
        type=_parts,
        default=PARTS,
        metavar="PARTS",
        help=f"run only these parts, comma-separated: {','.join(PARTS)} (default all)",
    )
    parser.add_argument(
        "--windows",
        type=_windows,
        metavar="KINDS",
        help=f"rate-limit window kinds, comma-separated: {','.join(MODES)} (default both, "
        "quick clock)",
    )
    waits = {
        "--quiet-wait": f"before each run, wait up to S s for other CPU load to fall under "
        f"{QUIET_CPUS} CPUs (default {OPTIONS['quiet_wait']:.0f}; 0: never wait)",
        "--timeout": "kill a contender still running after S s and report it as failed "
        f"(default {OPTIONS['timeout']:.0f})",
    }
    for flag, help_text in waits.items():
        default = OPTIONS[flag.removeprefix("--").replace("-", "_")]
        parser.add_argument(flag, type=float, default=default, metavar="S", help=help_text)
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (configs, stderr logs)"
    )
    return parser.parse_args()


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(text.split(","))
    if unknown := set(parts) - set(PARTS):
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(sorted(unknown))}")
    return parts


def _windows(text: str) -> tuple[str, ...]:
    kinds = tuple(text.split(","))
    if unknown := set(kinds) - set(MODES):
        raise argparse.ArgumentTypeError(f"unknown window kind(s) {', '.join(sorted(unknown))}")
    return kinds


def run_parts(settings: dict[str, Any], setup: Setup, parts: tuple[str, ...]) -> dict[str, Any]:
    """The chosen parts, one after another, in the order of PARTS."""
    results: dict[str, Any] = {}
    if "scenarios" in parts:
        results["scenarios"] = scenarios(settings, setup)
    if "fixed" in parts:
        results["fixed_cost"] = fixed_cost(setup)
    if "memory" in parts:
        small, large = settings["memory_small"], settings["memory_large"]
        results["memory"] = {
            "data_grows": memory_flatness(setup, small, large, MEMORY_ACCOUNTS),
            "accounts_grow": memory_flatness(setup, small, large, 0),
        }
    if "limits" in parts:
        records, windows = settings["limits_records"], settings["limits_windows"]
        results["limits"] = rate_limits(setup, records, windows)
    return results


def scenarios(settings: dict[str, Any], setup: Setup) -> dict[str, Any]:
    """Scenarios A, B, C, F0 and F."""
    latency = settings["b_latency_ms"]
    accounts = {"accounts": ACCOUNTS}
    tap_only = ("tap-analytics",)
    return {
        "A": scenario(setup, "A", "no latency", settings["a_records"], 0),
        "B": scenario(setup, "B", f"{latency} ms latency", settings["b_records"], latency),
        "C": scenario(
            setup,
            "C",
            "fast server (pages kept serialised and compressed), no latency",
            settings["c_records"],
            0,
            {**accounts, "fast_pages": True},
            ("tap-analytics", "bare-sequential"),
        ),
        "F0": scenario(
            setup,
            "F0",
            f"{FAULTS_LATENCY_MS} ms latency, no faults",
            settings["f_records"],
            FAULTS_LATENCY_MS,
            accounts,
            tap_only,
        ),
        "F": scenario(
            setup,
            "F",
            f"{FAULTS_LATENCY_MS} ms latency, 2 % faults of every kind, stalls of 2-4 s",
            settings["f_records"],
            FAULTS_LATENCY_MS,
            {**accounts, **FAULTS},
            tap_only,
        ),
    }


def main() -> None:
    args = parse_args()
    settings = dict(QUICK if args.quick else FULL)
    if args.rounds:
        settings["rounds"] = args.rounds
    if args.windows:
        settings["limits_windows"] = args.windows
    python = venv_python(args.python)
    tap = tap_executable(python)
    OPTIONS["quiet_wait"] = args.quiet_wait
    OPTIONS["timeout"] = args.timeout
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "parts": list(args.only),
        "settings": settings,
        "machine": machine_info(python),
        "commands": {},
    }
    log(f"contenders run on {python}; tap at {tap}")
    root = Path(tempfile.mkdtemp(prefix="tap-analytics-bench-"))
    try:
        results.update(run_parts(settings, Setup(python, tap, root, settings["rounds"]), args.only))
    finally:
        if args.keep:
            log(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results["commands"] = {
        c.name: " ".join(c.argv)
        for c in contenders(python, tap, Path("config.json"), Path("template-config.json"), "URL")
    }
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["machine"]["source_digest_end"] = code_fingerprint(tap_source(python))
    results["elapsed_s"] = time.perf_counter() - started
    results["ratios"] = ratios(results)
    print(report(results), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=list) + "\n")
        log(f"results written to {args.json}")


if __name__ == "__main__":
    main()
