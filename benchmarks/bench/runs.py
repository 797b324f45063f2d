"""One timed run of a contender, and the medians of several."""

from __future__ import annotations

import statistics
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from child import run_measured

from bench import log
from bench.contenders import Contender, reported_records, reported_sync_seconds
from bench.machine import machine_busy_seconds, self_cpu_seconds, wait_for_quiet
from bench.sandbox_process import Sandbox

#: Seconds to wait for a quiet machine before each run (--quiet-wait), and seconds after which
#: a contender is killed as hung (--timeout).
OPTIONS = {"quiet_wait": 20.0, "timeout": 300.0}


@dataclass
class Run:
    """What one run of a contender cost, from `os.wait4` and the sandbox's counters."""

    contender: str
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    sandbox_cpu_s: float
    requests: int
    reported_records: int | None
    #: The tap's own count of its sync's seconds (RUN_SUMMARY), from before its first request.
    sync_s: float | None = None
    #: Busy CPU seconds of everything else on the machine during the run (noise), and steal.
    foreign_cpu_s: float = 0.0
    steal_s: float = 0.0
    busy_cpus_before: float = 0.0
    #: A child's ru_maxrss cannot read below the peak RSS of the process that starts it (Linux
    #: keeps the high-water mark across fork and exec): the reaper's, the floor of max_rss_mb.
    rss_floor_mb: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def run_once(
    contender: Contender, sandbox: Sandbox, workdir: Path, stdout_path: Path | None
) -> Run:
    """Run one contender to completion; measure wall, CPU and peak RSS of the child."""
    quiet_wait = OPTIONS["quiet_wait"]
    busy_cpus_before = wait_for_quiet(quiet_wait) if quiet_wait > 0 else 0.0
    requests_before = sandbox.requests_served()
    sandbox_cpu_before = sandbox.cpu_seconds()
    machine_before, steal_before = machine_busy_seconds()
    self_before = self_cpu_seconds()
    stderr_path = workdir / f"{contender.name}.err"
    out = stdout_path.open("wb") if stdout_path else None
    try:
        child = run_measured(
            contender.argv, stderr_path, stdout=out, timeout=OPTIONS["timeout"], cwd=workdir
        )
    finally:
        if out is not None:
            out.close()
    if child.timed_out:
        raise RuntimeError(
            f"{contender.name} killed after {OPTIONS['timeout']:.0f} s without finishing (hung?)"
        )
    machine_after, steal_after = machine_busy_seconds()
    self_cpu = self_cpu_seconds() - self_before + child.reaper_cpu_s
    sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu_before
    requests = sandbox.requests_served() - requests_before
    stderr_text = stderr_path.read_text(errors="replace")
    if child.returncode != 0:
        tail = "\n".join(stderr_text.splitlines()[-15:])
        raise RuntimeError(f"{contender.name} exited with {child.returncode}:\n{tail}")
    child_cpu = child.user_s + child.sys_s
    run = Run(
        contender.name,
        child.wall_s,
        child.user_s,
        child.sys_s,
        child.max_rss_kib / 1024,
        sandbox_cpu,
        requests,
        reported_records(contender.name, stderr_text),
        sync_s=reported_sync_seconds(contender.name, stderr_text),
        foreign_cpu_s=max(0.0, machine_after - machine_before - child_cpu - sandbox_cpu - self_cpu),
        steal_s=steal_after - steal_before,
        busy_cpus_before=busy_cpus_before,
        rss_floor_mb=child.floor_kib / 1024,
    )
    expected = sum(sandbox.expected.values())
    if run.reported_records is not None and run.reported_records != expected:
        raise RuntimeError(
            f"{contender.name} reports {run.reported_records} records, the sandbox has {expected}"
        )
    return run


def attempt(
    contender: Contender, sandbox: Sandbox, workdir: Path, stdout_path: Path | None = None
) -> Run | str:
    """run_once, or the reason it failed: one failing contender does not end the benchmark."""
    try:
        return run_once(contender, sandbox, workdir, stdout_path)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        reason = str(exc).strip()
        log(f"  FAILED {contender.name}: {reason}")
        return reason.splitlines()[0] if reason else type(exc).__name__


def summarize(runs: list[Run], records: int, failure: str | None = None) -> dict[str, Any]:
    """Medians of the runs (min and max of wall time), or why the contender failed."""
    if failure or not runs:
        return {
            "failed": failure or "no runs",
            "records": records,
            "runs": [asdict(r) for r in runs],
        }
    median = statistics.median
    walls = [r.wall_s for r in runs]
    wall = median(walls)
    cpu = median([r.cpu_s for r in runs])
    return {
        "rounds": len(runs),
        "records": records,
        "wall_s": wall,
        "wall_min_s": min(walls),
        "wall_max_s": max(walls),
        "records_per_s": records / wall,
        "cpu_s": cpu,
        "user_s": median([r.user_s for r in runs]),
        "sys_s": median([r.sys_s for r in runs]),
        "cpu_us_per_record": cpu / records * 1e6,
        "max_rss_mb": median([r.max_rss_mb for r in runs]),
        "sandbox_cpu_s": median([r.sandbox_cpu_s for r in runs]),
        "requests": median([r.requests for r in runs]),
        "sync_s": median(syncs) if (syncs := [r.sync_s for r in runs if r.sync_s]) else None,
        "foreign_cpu_s": median([r.foreign_cpu_s for r in runs]),
        "rss_floor_mb": max(r.rss_floor_mb for r in runs),
        "runs": [asdict(r) for r in runs],
    }
