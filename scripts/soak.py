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
on its own process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from tap_analytics.sandbox import SandboxConfig, SandboxServer
from tap_analytics.tap import STREAM_NAMES as STREAMS
from tap_analytics.timestamps import rfc3339

#: The console script, as users run it (next to this interpreter, in the venv).
TAP = str(Path(sys.executable).with_name("tap-analytics"))
API_KEY = "sandbox-key"
ALL_FAULTS = ("429", "500", "502", "503", "504", "reset", "stall", "truncated")


# Reading the tap's output ------------------------------------------------------------------


class _Record(msgspec.Struct):
    """The two fields of a record the check needs; msgspec skips the others unparsed."""

    id: t.Any = None
    updated_at: t.Any = None


class _Message(msgspec.Struct):
    """A Singer message, decoded only as far as the check needs."""

    type: str
    stream: str | None = None
    record: _Record | None = None
    value: t.Any = None


_decode = msgspec.json.Decoder(_Message).decode


@dataclass
class RunOutput:
    """What one tap run printed, reduced to what a completeness check needs."""

    returncode: int = -1
    wall_seconds: float = 0.0
    peak_rss_kib: int = 0
    cpu_seconds: float = 0.0
    records: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    states: int = 0
    last_state: dict[str, t.Any] | None = None
    bad_lines: int = 0
    first_bad_line: str = ""
    #: stream -> id -> updated_at of the last RECORD with that id (this run only).
    seen: dict[str, dict[str, str]] = field(default_factory=dict)
    summary: dict[str, t.Any] | None = None
    timed_out: bool = False
    reaper_rss_kib: int = 0

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


def read_messages(stream: t.IO[bytes], out: RunOutput) -> None:
    """Consume the tap's stdout line by line, keeping ids and updated_at per stream."""
    strings: dict[str, str] = {}  # updated_at values repeat (ties): keep one copy of each
    intern = strings.setdefault
    for line in stream:
        try:
            message = _decode(line)
        except msgspec.DecodeError:
            out.bad_lines += 1
            out.first_bad_line = out.first_bad_line or line[:200].decode(errors="replace")
            continue
        kind = message.type
        if kind == "RECORD" and message.record is not None and message.stream is not None:
            name = message.stream
            seen = out.seen.get(name)
            if seen is None:
                seen = out.seen[name] = {}
            record_id = message.record.id
            updated_at = message.record.updated_at
            if record_id in seen:
                out.duplicates[name] += 1
            seen[record_id] = intern(updated_at, updated_at) if updated_at else updated_at
            out.records[name] += 1
        elif kind == "STATE":
            out.states += 1
            out.last_state = message.value


#: Runs the tap and reaps it with os.wait4, in a small process of its own. The tap must not be
#: forked from this process: Linux carries the parent's memory high-water mark into the child
#: (fork copies the address space, exec then records its peak in the child's ru_maxrss), so a
#: tap forked from here would report at least this process's RSS, sandbox and id maps
#: included. Forked from this fresh interpreter instead, it inherits only a few MiB.
#: argv: result file, log file, the tap's command. The tap's stdout is this process's stdout.
_REAPER = """
import json, os, subprocess, sys, time
result, log, command = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "wb") as stderr:
    started = time.monotonic()
    child = subprocess.Popen(command, stderr=stderr)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
with open(result, "w") as file:
    json.dump({"returncode": child.returncode, "wall_seconds": wall,
               "maxrss_kib": usage.ru_maxrss, "utime": usage.ru_utime, "stime": usage.ru_stime,
               "reaper_maxrss_kib": __import__("resource").getrusage(
                   __import__("resource").RUSAGE_SELF).ru_maxrss}, file)
"""


def run_tap(
    config_file: Path, log_file: Path, state: dict[str, t.Any] | None, timeout: float = 0
) -> RunOutput:
    """Run the tap to the end as a separate process; measure its wall time and peak RSS.

    A run still going after `timeout` seconds (0: no limit) is killed and marked as such.
    """
    command = [TAP, "--config", str(config_file)]
    if state is not None:
        state_file = config_file.with_name(f"{log_file.stem}-input-state.json")
        state_file.write_text(json.dumps(state))
        command += ["--state", str(state_file)]
    result_file = log_file.with_suffix(".rusage.json")
    result_file.unlink(missing_ok=True)
    out = RunOutput()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(result_file), str(log_file), *command],
        stdout=subprocess.PIPE,
        bufsize=1 << 20,
        start_new_session=True,  # its own process group: the watchdog ends the tap with it
    )
    assert process.stdout is not None
    watchdog = threading.Timer(timeout, _kill, (process, out)) if timeout else None
    if watchdog is not None:
        watchdog.start()
    try:
        read_messages(process.stdout, out)
    finally:
        process.stdout.close()
        process.wait()
        if watchdog is not None:
            watchdog.cancel()
    out.wall_seconds = time.monotonic() - started
    if result_file.exists():
        usage = json.loads(result_file.read_text())
        out.returncode = usage["returncode"]
        out.wall_seconds = usage["wall_seconds"]
        out.peak_rss_kib = usage["maxrss_kib"]  # KiB on Linux
        out.cpu_seconds = usage["utime"] + usage["stime"]
        out.reaper_rss_kib = usage["reaper_maxrss_kib"]
    else:  # the reaper itself was killed (by the watchdog) or failed
        out.returncode = process.returncode if process.returncode else -1
    out.summary = _run_summary(log_file)
    return out


def _kill(process: subprocess.Popen[bytes], out: RunOutput) -> None:
    """End a run that overran its time: the reaper and the tap, the group this script started."""
    out.timed_out = True
    os.killpg(process.pid, signal.SIGKILL)


def _run_summary(log_file: Path) -> dict[str, t.Any] | None:
    """The tap's own RUN_SUMMARY line, if it logged one."""
    summary = None
    with log_file.open("rb") as log:
        for line in log:
            _head, found, rest = line.partition(b"RUN_SUMMARY ")
            if found:
                with contextlib.suppress(ValueError):
                    summary = json.loads(rest)
    return summary


# The check -------------------------------------------------------------------------------


def check(
    snapshot: dict[str, list[dict[str, t.Any]]], runs: list[RunOutput], examples: int = 5
) -> dict[str, t.Any]:
    """Every snapshot record came out of some run, the last time with its latest updated_at.

    Also counts what the first run alone would have missed, to show that the check has teeth
    (records changed during run 1 land after its window and only run 2 can bring them).
    """
    streams: dict[str, t.Any] = {}
    for name in sorted(set(snapshot) | {n for run in runs for n in run.seen}):
        seen = [run.seen.get(name, {}) for run in reversed(runs)]  # the latest run first
        records = snapshot.get(name, [])
        missing: list[str] = []
        stale: list[dict[str, str]] = []
        first_only = 0
        for record in records:
            record_id = record["id"]
            expected = rfc3339(record["updated_at"])
            got = next((ids[record_id] for ids in seen if record_id in ids), None)
            if got is None:
                missing.append(record_id)
            elif got != expected:
                stale.append({"id": record_id, "emitted": got, "latest": expected})
            first_only += runs[0].seen.get(name, {}).get(record_id) != expected
        live = {record["id"] for record in records}
        emitted = set().union(*seen)
        streams[name] = {
            "in_snapshot": len(records),
            "emitted_ids": len(emitted),
            "missing": len(missing),
            "stale": len(stale),
            "missing_or_stale_after_run1_alone": first_only,
            "emitted_then_deleted": len(emitted - live),
            "missing_examples": missing[:examples],
            "stale_examples": stale[:examples],
        }
        del live, emitted
    return streams


# The soak ----------------------------------------------------------------------------------


def _stats_delta(after: dict[str, t.Any], before: dict[str, t.Any]) -> dict[str, t.Any]:
    """Sandbox counters accrued between two readings."""
    delta: dict[str, t.Any] = {}
    for name, value in after.items():
        if isinstance(value, dict):
            old = before.get(name, {})
            delta[name] = {
                k: v - old.get(k, 0) for k, v in sorted(value.items()) if v - old.get(k, 0)
            }
        else:
            delta[name] = value - before.get(name, 0)
    return delta


def _run_report(run: RunOutput, sandbox: dict[str, t.Any]) -> dict[str, t.Any]:
    summary = run.summary or {}
    retries: Counter[str] = Counter()
    for stream in summary.get("streams", []):
        retries.update(stream.get("retries", {}))
    return {
        "returncode": run.returncode,
        "timed_out": run.timed_out,
        "wall_seconds": round(run.wall_seconds, 2),
        "records": run.total_records,
        "records_per_second": round(run.total_records / max(run.wall_seconds, 1e-9)),
        "peak_rss_mib": round(run.peak_rss_kib / 1024, 1),
        "reaper_peak_rss_mib": round(run.reaper_rss_kib / 1024, 1),
        "cpu_seconds": round(run.cpu_seconds, 2),
        "records_by_stream": dict(sorted(run.records.items())),
        "duplicates": sum(run.duplicates.values()),
        "states": run.states,
        "bad_lines": run.bad_lines,
        "first_bad_line": run.first_bad_line,
        "tap_retries": dict(sorted(retries.items())),
        "tap_rate_limit_wait_seconds": summary.get("rate_limit_wait_seconds"),
        "tap_stream_status": {s["stream"]: s["status"] for s in summary.get("streams", [])},
        "sandbox": sandbox,
    }


def soak(options: argparse.Namespace) -> dict[str, t.Any]:
    """Run the whole soak and return its report."""
    per_resource = max(1, math.ceil(options.records / len(STREAMS)))
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
        config = {"api_key": API_KEY, "api_url": server.url}
        config["request_timeout"] = options.request_timeout
        config_file = workdir / "config.json"
        config_file.write_text(json.dumps(config))

        stats0 = server.stats()
        _log("run 1: full sync while the data changes")
        first = run_tap(config_file, workdir / "run1.log", None, options.run_timeout)
        stats1 = server.stats()
        _log(
            f"run 1: exit {first.returncode}, {first.total_records:,} records in "
            f"{first.wall_seconds:.1f} s, peak RSS {first.peak_rss_kib / 1024:.0f} MiB"
        )
        if first.last_state is not None:
            (workdir / "run1-last-state.json").write_text(json.dumps(first.last_state))

        server.configure(mutate_every=0)
        server.advance_clock(1)
        _log("run 2: from run 1's last STATE, after the changes stopped and the clock moved")
        second = run_tap(
            config_file, workdir / "run2.log", first.last_state or {}, options.run_timeout
        )
        stats2 = server.stats()
        _log(
            f"run 2: exit {second.returncode}, {second.total_records:,} records in "
            f"{second.wall_seconds:.1f} s, peak RSS {second.peak_rss_kib / 1024:.0f} MiB"
        )
        _log("checking against the sandbox's final snapshot")
        snapshot = server.snapshot()
        snapshot_total = sum(len(records) for records in snapshot.values())
        streams = check(snapshot, [first, second])
        del snapshot
    finally:
        server.close()

    missing = sum(s["missing"] for s in streams.values())
    stale = sum(s["stale"] for s in streams.values())
    problems = []
    if missing:
        problems.append(f"{missing} records of the final snapshot never emitted")
    if stale:
        problems.append(f"{stale} records emitted last with an old updated_at")
    for number, run in enumerate((first, second), start=1):
        if run.timed_out:
            problems.append(f"run {number} killed after --run-timeout {options.run_timeout} s")
        if run.returncode != 0:
            problems.append(f"run {number} exited {run.returncode} (see run{number}.log)")
        if run.bad_lines:
            problems.append(f"run {number} printed {run.bad_lines} lines that are not JSON")
        if run.last_state is None:
            problems.append(f"run {number} emitted no STATE")
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


def _log(message: str) -> None:
    sys.stderr.write(f"[soak {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


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
    parser.add_argument("--faults", default=",".join(ALL_FAULTS))
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
