"""The rate-limit regimes of issue 13: one job under the key's limit, three jobs sharing it.

The documented 600 requests a minute, in 6-second windows of 60 requests, on issue 13's data
(5 resources of N records and 2 of one record per account, 150 accounts). One job reads
everything; three jobs (separate tap processes started together, `max_concurrency` 8 each)
read 50 accounts each (`user_ids`, the README's *Scaling out*), once adapting to each other
(the default) and once with `rate_limit_share` 1/3. Each regime runs once under each kind of
window (`rate_window_start`), against a fresh sandbox.

Times count from the sandbox's first request's arrival to the last job's exit. The floor is the
start of the last window the pages need: ceil(records / 100) pages per stream and account group
(what any client must fetch), at 60 a window, the first window (under clock-aligned windows,
only what is left of it when the first request arrives) included. The sandbox counts the 429s
it sent and the requests that arrived while their key was inside a Retry-After.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from bench import log
from bench.machine import wait_for_quiet
from bench.runs import OPTIONS
from bench.sandbox_process import Sandbox
from bench.scenarios import Setup
from tap_analytics.sandbox import RESOURCE_NAMES, run_summary, tap_settings

#: The limit and the jobs of issue 13's table (the data size is the caller's).
ACCOUNTS = 150
RATE_LIMIT = 60
RATE_WINDOW = 6.0
JOBS = 3
MAX_CONCURRENCY = 8
PAGE = 100
MODES = ("clock", "first_request")


def account_groups(
    setup: Setup, workdir: Path, records: int
) -> tuple[list[list[str]], dict[str, Any]]:
    """The jobs' groups of accounts, the pages one job and each group need, the records.

    Read from an unlimited sandbox with the same data, so the measured ones start untouched
    (and are not asked after the run, when their window may have no budget left).
    """
    switches = {"accounts": ACCOUNTS}
    with Sandbox(setup.python, records, 0, workdir, "accounts", switches) as sandbox:
        ids = [
            user["id"]
            for offset in range(0, ACCOUNTS, PAGE)
            for user in sandbox.get(f"/v1/users?limit={PAGE}&offset={offset}")["data"]
        ]
        size = math.ceil(len(ids) / JOBS)
        groups = [ids[i : i + size] for i in range(0, len(ids), size)]

        def pages(user_ids: list[str] | None) -> dict[str, int]:
            query = "" if user_ids is None else "&user_id=" + ",".join(user_ids)
            totals = {
                name: sandbox.get(f"/v1/{name}?limit=1{query}")["paging"]["total"]
                for name in RESOURCE_NAMES
            }
            return {name: math.ceil(total / PAGE) for name, total in totals.items()}

        needed = {
            "all": pages(None),
            "groups": [pages(group) for group in groups],
            "records": sum(sandbox.expected.values()),
        }
    return groups, needed


def floor_seconds(pages: int, mode: str, first_request_at: float) -> tuple[int, float]:
    """The windows `pages` need at the limit, and when the last of them starts."""
    windows = math.ceil(pages / RATE_LIMIT)
    if windows <= 1:
        return windows, 0.0
    if mode == "clock":
        first_end = (math.floor(first_request_at / RATE_WINDOW) + 1) * RATE_WINDOW
        return windows, first_end - first_request_at + (windows - 2) * RATE_WINDOW
    return windows, (windows - 1) * RATE_WINDOW


def _jobs_run(
    setup: Setup, workdir: Path, slug: str, url: str, jobs: list[dict[str, Any]]
) -> tuple[float, list[tuple[int, Path]]]:
    """Start the jobs together and wait for all; when the last ended, each exit code and log.

    Every job is killed once the first of them has run `--timeout` seconds (RuntimeError).
    """
    started: list[tuple[subprocess.Popen[bytes], IO[bytes], Path]] = []
    try:
        for index, extra in enumerate(jobs):
            config = workdir / f"{slug}-{index}.json"
            settings = tap_settings(url, max_concurrency=MAX_CONCURRENCY)
            config.write_text(json.dumps({**settings, **extra}))
            err_path = workdir / f"{slug}-{index}.err"
            stderr: IO[bytes] = err_path.open("wb")
            argv = [str(setup.tap), "--config", str(config)]
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
            started.append((process, stderr, err_path))
        deadline = time.monotonic() + OPTIONS["timeout"]
        ended = 0.0
        for process, _, _ in started:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"killed after {OPTIONS['timeout']:.0f} s without finishing (hung?)"
                ) from None
            ended = max(ended, time.time())
        return ended, [(process.returncode, err_path) for process, _, err_path in started]
    finally:
        for process, stderr, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()
            stderr.close()


def run_regime(
    setup: Setup,
    workdir: Path,
    name: str,
    mode: str,
    records: int,
    jobs: list[dict[str, Any]],
    pages: int,
    expected: int,
) -> dict[str, Any]:
    """Run these jobs at once against a fresh limited sandbox; times, counts and the floor.

    `expected`: the records the jobs must report together.
    """
    slug = "".join(c if c.isalnum() else "-" for c in f"{name}-{mode}")
    row: dict[str, Any] = {
        "regime": name,
        "windows": mode,
        "jobs": len(jobs),
        "pages_needed": pages,
    }
    switches = {
        "accounts": ACCOUNTS,
        "rate_limit": RATE_LIMIT,
        "rate_window": RATE_WINDOW,
        "rate_window_start": mode,
    }
    quiet_wait = OPTIONS["quiet_wait"]
    row["busy_cpus_before"] = wait_for_quiet(quiet_wait) if quiet_wait > 0 else 0.0
    try:
        with Sandbox(setup.python, records, 0, workdir, slug, switches) as sandbox:
            ended, exits = _jobs_run(setup, workdir, slug, sandbox.url, jobs)
            stats = sandbox.stats()
    except (RuntimeError, OSError) as exc:  # a hung job, the sandbox gone: the next regime
        log(f"  FAILED {name}, {mode} windows: {exc}")
        return {**row, "failed": str(exc)}
    job_records = 0
    for index, (returncode, err_path) in enumerate(exits):
        text = err_path.read_text(errors="replace")
        try:
            summary = run_summary(text.splitlines())
        except ValueError:  # a summary line cut off
            summary = None
        if returncode != 0 or summary is None:
            log("\n".join(text.splitlines()[-10:]))
            return {**row, "failed": f"job {index} exited with {returncode}"}
        job_records += int(summary["records"])
    if job_records != expected:
        return {
            **row,
            "failed": f"the jobs report {job_records} records, the sandbox has {expected}",
        }
    first_request_at = float(stats["first_request_at"])
    windows, floor = floor_seconds(pages, mode, first_request_at)
    wall = ended - first_request_at
    return {
        **row,
        "records": job_records,
        "requests": stats["requests"],
        "windows_needed": windows,
        "floor_s": floor,
        "wall_s": wall,
        "wall_over_floor": wall / floor if floor else None,
        "refused_429": stats["rate_limited"],
        "inside_retry_after": stats["requests_in_retry_after_window"],
    }


def rate_limits(setup: Setup, records: int, modes: tuple[str, ...]) -> dict[str, Any]:
    """Every regime under each kind of window, one run each."""
    log(
        f"\n== rate limits: {RATE_LIMIT} requests per {RATE_WINDOW:g} s window, {records:,} "
        f"records/resource, {ACCOUNTS} accounts, windows {', '.join(modes)} =="
    )
    workdir = setup.root / "limits"
    workdir.mkdir()
    groups, needed = account_groups(setup, workdir, records)
    one_job = sum(needed["all"].values())
    split = sum(sum(group.values()) for group in needed["groups"])
    share = 1 / len(groups)
    regimes: list[tuple[str, list[dict[str, Any]], int]] = [
        ("one job", [{}], one_job),
        ("three jobs, adaptive", [{"user_ids": group} for group in groups], split),
        (
            "three jobs, rate_limit_share 1/3",
            [{"user_ids": group, "rate_limit_share": share} for group in groups],
            split,
        ),
    ]
    rows = []
    for mode in modes:
        for name, jobs, pages in regimes:
            rows.append(
                run_regime(setup, workdir, name, mode, records, jobs, pages, needed["records"])
            )
            log("  " + format_row(rows[-1]))
    return {
        "records_per_resource": records,
        "accounts": ACCOUNTS,
        "rate_limit": RATE_LIMIT,
        "rate_window_s": RATE_WINDOW,
        "max_concurrency": MAX_CONCURRENCY,
        "modes": list(modes),
        "regimes": rows,
    }


def format_row(row: dict[str, Any]) -> str:
    """One regime's outcome on a line, for the progress log."""
    head = f"{row['regime']:<34} {row['windows']:<13}"
    if "failed" in row:
        return f"{head} FAILED: {row['failed']}"
    ratio = "-" if row["wall_over_floor"] is None else f"{row['wall_over_floor']:.2f} x"
    return (
        f"{head} {row['pages_needed']:>5} pages {row['windows_needed']:>2} windows"
        f"  floor {row['floor_s']:>5.1f} s  wall {row['wall_s']:>5.1f} s  {ratio}"
        f"  429s {row['refused_429']}  inside Retry-After {row['inside_retry_after']}"
        f"  ({row['requests']} requests, {row['records']} records)"
    )
