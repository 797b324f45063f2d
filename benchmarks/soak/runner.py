"""The soak: a sync while the data changes, a second one from its last STATE, then the check.

The sandbox runs in this process (SandboxServer in a thread): it has no admin endpoint for its
clock. The tap runs as its own process through `child.run_measured`, so the memory figures are
the tap's alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import sys
import tempfile
import time
import typing as t
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from child import Measured, run_measured

from soak.check import check
from soak.output import Output
from tap_analytics.sandbox import (
    RESOURCE_NAMES,
    SandboxConfig,
    SandboxServer,
    run_summary,
    tap_script,
    tap_settings,
)


@dataclass
class TapRun:
    """One run of the tap: how it ran, what it printed, and the summary it logged."""

    measured: Measured
    output: Output
    summary: dict[str, t.Any] | None


def run_tap(
    config_file: Path, log_file: Path, state: dict[str, t.Any] | None, timeout: float = 0
) -> TapRun:
    """Run the tap to the end as a separate process, reading its stdout as it comes.

    A run still going after `timeout` seconds (0: no limit) is killed and marked as such.
    """
    command = [str(tap_script()), "--config", str(config_file)]
    if state is not None:
        state_file = config_file.with_name(f"{log_file.stem}-input-state.json")
        state_file.write_text(json.dumps(state))
        command += ["--state", str(state_file)]
    output = Output()
    measured = run_measured(command, log_file, read_stdout=output.read, timeout=timeout)
    summary = None
    with log_file.open(errors="replace") as log, contextlib.suppress(ValueError):
        summary = run_summary(log)
    return TapRun(measured, output, summary)


def _stats_delta(after: dict[str, t.Any], before: dict[str, t.Any]) -> dict[str, t.Any]:
    """Sandbox counters accrued between two readings; what is not a count, as of the later one."""
    delta: dict[str, t.Any] = {}
    for name, value in after.items():
        if isinstance(value, dict):
            old = before.get(name, {})
            delta[name] = {
                k: v - old.get(k, 0) for k, v in sorted(value.items()) if v - old.get(k, 0)
            }
        elif isinstance(value, int):
            delta[name] = value - before.get(name, 0)
        else:  # an instant such as first_request_at: a difference would mean nothing
            delta[name] = value
    return delta


def _run_report(run: TapRun, sandbox: dict[str, t.Any]) -> dict[str, t.Any]:
    measured, output, summary = run.measured, run.output, run.summary or {}
    retries: Counter[str] = Counter()
    for stream in summary.get("streams", []):
        retries.update(stream.get("retries", {}))
    return {
        "returncode": measured.returncode,
        "timed_out": measured.timed_out,
        "wall_seconds": round(measured.wall_s, 2),
        "records": output.total_records,
        "records_per_second": round(output.total_records / max(measured.wall_s, 1e-9)),
        "peak_rss_mib": round(measured.max_rss_kib / 1024, 1),
        "reaper_peak_rss_mib": round(measured.reaper_rss_kib / 1024, 1),
        "cpu_seconds": round(measured.user_s + measured.sys_s, 2),
        "records_by_stream": dict(sorted(output.records.items())),
        "duplicates": sum(output.duplicates.values()),
        "states": output.states,
        "bad_lines": output.bad_lines,
        "first_bad_line": output.first_bad_line,
        "tap_retries": dict(sorted(retries.items())),
        "tap_rate_limit_wait_seconds": summary.get("rate_limit_wait_seconds"),
        "tap_stream_status": {s["stream"]: s["status"] for s in summary.get("streams", [])},
        "sandbox": sandbox,
    }


def soak(options: argparse.Namespace) -> dict[str, t.Any]:
    """Run the whole soak and return its report."""
    per_resource = max(1, math.ceil(options.records / len(RESOURCE_NAMES)))
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="tap-analytics-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    switches = {
        "records_per_resource": per_resource,
        "seed": options.seed,
        "frozen_clock": True,
        "fault_rate": options.fault_rate,
        "faults": tuple(options.faults.split(",")),
        "stall_seconds": options.stall_seconds,
        "rate_limit": options.rate_limit or None,
        "rate_window": options.rate_window,
        "mutate_every": options.mutate_every,
        "mutate_updates": options.mutate_updates,
        "mutate_inserts": options.mutate_inserts,
        "mutate_deletes": options.mutate_deletes,
    }
    _log(f"starting the sandbox: {per_resource:,} records per resource ({workdir})")
    started = time.monotonic()
    server = SandboxServer(SandboxConfig(**switches)).start()
    try:
        sandbox_start = time.monotonic() - started
        _log(f"sandbox up at {server.url} in {sandbox_start:.1f} s")
        config = tap_settings(server.url, request_timeout=options.request_timeout)
        config_file = workdir / "config.json"
        config_file.write_text(json.dumps(config))

        stats0 = server.stats()
        _log("run 1: full sync while the data changes")
        first = run_tap(config_file, workdir / "run1.log", None, options.run_timeout)
        stats1 = server.stats()
        _log_run(1, first)
        first_state = first.output.last_state
        if first_state is not None:
            (workdir / "run1-last-state.json").write_text(json.dumps(first_state))

        server.configure(mutate_every=0)
        server.advance_clock(1)
        _log("run 2: from run 1's last STATE, after the changes stopped and the clock moved")
        second = run_tap(config_file, workdir / "run2.log", first_state or {}, options.run_timeout)
        stats2 = server.stats()
        _log_run(2, second)
        _log("checking against the sandbox's final snapshot")
        snapshot = server.snapshot()
        snapshot_total = sum(len(records) for records in snapshot.values())
        streams = check(snapshot, [first.output, second.output])
        del snapshot
    finally:
        server.close()

    changed_in_run2 = stats2.get("mutations", 0) != stats1.get("mutations", 0)
    problems = _problems(streams, [first, second], options.run_timeout, changed_in_run2)
    return {
        "complete": not problems,
        "problems": problems,
        "records_requested": options.records,
        "records_per_resource": per_resource,
        "records_in_final_snapshot": snapshot_total,
        "sandbox_switches": switches,
        "tap_settings": {k: v for k, v in config.items() if k != "api_key"},
        "sandbox_start_seconds": round(sandbox_start, 1),
        "run1": _run_report(first, _stats_delta(stats1, stats0)),
        "run2": _run_report(second, _stats_delta(stats2, stats1)),
        "sandbox_totals": stats2,
        "streams": streams,
        "soak_process_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
        "workdir": str(workdir),
    }


def _problems(
    streams: dict[str, t.Any], runs: list[TapRun], run_timeout: float, changed_in_run2: bool
) -> list[str]:
    """What makes the soak incomplete: records lost or stale, runs that failed, or data that
    changed during run 2 (the check takes run 2 to read a still snapshot)."""
    missing = sum(s["missing"] for s in streams.values())
    stale = sum(s["stale"] for s in streams.values())
    problems = []
    if changed_in_run2:
        problems.append("the sandbox's data changed during run 2: the check does not hold")
    if missing:
        problems.append(f"{missing} records of the final snapshot never emitted")
    if stale:
        problems.append(f"{stale} records emitted last with an old updated_at")
    for number, run in enumerate(runs, start=1):
        measured, output = run.measured, run.output
        if measured.timed_out:
            problems.append(f"run {number} killed after --run-timeout {run_timeout} s")
        if measured.returncode != 0:
            problems.append(f"run {number} exited {measured.returncode} (see run{number}.log)")
        if output.bad_lines:
            problems.append(f"run {number} printed {output.bad_lines} lines that are not JSON")
        if output.last_state is None:
            problems.append(f"run {number} emitted no STATE")
    return problems


def _log_run(number: int, run: TapRun) -> None:
    measured = run.measured
    _log(
        f"run {number}: exit {measured.returncode}, {run.output.total_records:,} records in "
        f"{measured.wall_s:.1f} s, peak RSS {measured.max_rss_kib / 1024:.0f} MiB"
    )


def _log(message: str) -> None:
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()
