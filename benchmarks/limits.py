"""The rate-limit regimes: one job under the key's limit, three jobs sharing the key.

`python benchmarks/limits.py [--python PATH] [--modes clock,first_request] [--json PATH]`

As issue 13 measures them: the documented 600 requests a minute, in 6-second windows of 60
requests, and 26,000 records (5 resources of 5,140 records and 2 of one record per account,
150 accounts). One job reads everything; three jobs (separate tap processes started together,
`max_concurrency` 8 each) read 50 accounts each (`user_ids`, the README's *Scaling out*), once
adapting to each other (the default) and once with `rate_limit_share` 1/3.

Times count from the sandbox's first request's arrival to the last job's exit. The floor is the
start of the last window the pages need: ceil(records / 100) pages per stream and account group
(what any client must fetch), at 60 a window, the first window (under clock-aligned windows,
only what is left of it when the first request arrives) included. The sandbox counts the 429s
it sent and the requests that arrived while their key was inside a Retry-After.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tap_analytics.sandbox import (  # noqa: E402 (the repository's package, run as a script)
    API_KEY,
    RESOURCE_NAMES,
    run_summary,
    tap_script,
    tap_settings,
)

#: The data and the limit of issue 13's table.
SETUP = {
    "records_per_resource": 5140,
    "accounts": 150,
    "rate_limit": 60,
    "rate_window": 6.0,
    "jobs": 3,
    "max_concurrency": 8,
}
PAGE = 100
#: Seconds after which a regime is abandoned as hung.
TIMEOUT = 300.0


class Sandbox:
    """The sandbox API in its own process, stopped on exit."""

    def __init__(self, python: Path, workdir: Path, **switches: Any) -> None:
        argv = [str(python), "-m", "tap_analytics.sandbox", "--port", "0", "--api-key", API_KEY]
        for name, value in switches.items():
            argv += ["--" + name.replace("_", "-"), str(value)]
        self._stderr = (workdir / "sandbox.err").open("ab")
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=self._stderr)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().decode().strip()
        if not self.url.startswith("http"):
            self.close()
            sys.exit(f"the sandbox did not start; see {workdir / 'sandbox.err'}")

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"X-API-Key": API_KEY})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def account_groups(python: Path, workdir: Path) -> tuple[list[list[str]], dict[str, Any]]:
    """The accounts split into the jobs' groups, and the pages every group needs per stream.

    Read from an unlimited sandbox with the same data, so the measured ones start untouched.
    """
    data = {k: SETUP[k] for k in ("records_per_resource", "accounts")}
    with Sandbox(python, workdir, **data) as sandbox:
        ids = [
            user["id"]
            for offset in range(0, SETUP["accounts"], PAGE)
            for user in sandbox.get(f"/v1/users?limit={PAGE}&offset={offset}")["data"]
        ]
        size = math.ceil(len(ids) / SETUP["jobs"])
        groups = [ids[i : i + size] for i in range(0, len(ids), size)]

        def pages(user_ids: list[str] | None) -> dict[str, int]:
            query = "" if user_ids is None else "&user_id=" + ",".join(user_ids)
            totals = {
                name: sandbox.get(f"/v1/{name}?limit=1{query}")["paging"]["total"]
                for name in RESOURCE_NAMES
            }
            return {name: math.ceil(total / PAGE) for name, total in totals.items()}

        needed = {"all": pages(None), "groups": [pages(group) for group in groups]}
    return groups, needed


def floor_seconds(pages: int, mode: str, first_request_at: float) -> tuple[int, float]:
    """The windows `pages` need at the limit, and when the last of them starts."""
    limit, window = SETUP["rate_limit"], SETUP["rate_window"]
    windows = math.ceil(pages / limit)
    if windows <= 1:
        return windows, 0.0
    if mode == "clock":
        first_end = (math.floor(first_request_at / window) + 1) * window
        return windows, first_end - first_request_at + (windows - 2) * window
    return windows, (windows - 1) * window


def run_regime(
    name: str,
    python: Path,
    workdir: Path,
    mode: str,
    jobs: list[dict[str, Any]],
    pages: int,
) -> dict[str, Any]:
    """Run these jobs at once against a fresh limited sandbox; times, counts and the floor."""
    limits = {k: SETUP[k] for k in ("records_per_resource", "accounts", "rate_limit")}
    slug = "".join(c if c.isalnum() else "-" for c in f"{name}-{mode}")
    with Sandbox(
        python, workdir, **limits, rate_window=SETUP["rate_window"], rate_window_start=mode
    ) as sandbox:
        processes = []
        for index, extra in enumerate(jobs):
            config = workdir / f"{slug}-{index}.json"
            settings = tap_settings(sandbox.url, max_concurrency=SETUP["max_concurrency"])
            config.write_text(json.dumps({**settings, **extra}))
            stderr = (workdir / f"{slug}-{index}.err").open("wb")
            argv = [str(tap_script(python)), "--config", str(config)]
            processes.append(
                (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr), stderr)
            )
        ended = 0.0
        for process, stderr in processes:
            process.wait(timeout=TIMEOUT)
            ended = max(ended, time.time())
            stderr.close()
        stats = sandbox.get("/_sandbox/stats")
    records = 0
    for index, (process, _) in enumerate(processes):
        text = (workdir / f"{slug}-{index}.err").read_text(errors="replace")
        summary = run_summary(text.splitlines())
        if process.returncode != 0 or summary is None:
            tail = "\n".join(text.splitlines()[-10:])
            raise RuntimeError(f"{name} job {index} exited with {process.returncode}:\n{tail}")
        records += int(summary["records"])
    started = float(stats["first_request_at"])
    windows, floor = floor_seconds(pages, mode, started)
    wall = ended - started
    return {
        "regime": name,
        "windows": mode,
        "records": records,
        "pages_needed": pages,
        "requests": stats["requests"],
        "windows_needed": windows,
        "floor_s": round(floor, 2),
        "wall_s": round(wall, 2),
        "wall_over_floor": round(wall / floor, 3) if floor else None,
        "refused_429": stats["rate_limited"],
        "inside_retry_after": stats["requests_in_retry_after_window"],
    }


def limits(python: Path, workdir: Path, modes: tuple[str, ...] = ("clock",)) -> list[dict]:
    """Every regime under each kind of window; one row each."""
    groups, needed = account_groups(python, workdir)
    one_job = sum(needed["all"].values())
    split = sum(sum(group.values()) for group in needed["groups"])
    share = 1 / len(groups)
    regimes = [
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
            rows.append(run_regime(name, python, workdir, mode, jobs, pages))
            print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict[str, Any]) -> str:
    return (
        f"{row['regime']:<34} {row['windows']:<13} {row['pages_needed']:>5} pages"
        f" {row['windows_needed']:>2} windows  floor {row['floor_s']:>5.1f} s"
        f"  wall {row['wall_s']:>5.1f} s  {row['wall_over_floor']:.2f} x"
        f"  429s {row['refused_429']}  inside Retry-After {row['inside_retry_after']}"
        f"  ({row['requests']} requests, {row['records']} records)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    runtime = REPO / ".venv-bench" / "bin" / "python"
    parser.add_argument(
        "--python",
        type=Path,
        default=runtime if runtime.exists() else Path(sys.executable),
        help="interpreter with the tap installed (default: .venv-bench, else this one)",
    )
    parser.add_argument(
        "--modes", default="clock", help="window kinds, comma-separated: clock,first_request"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    options = parser.parse_args()
    print(
        f"{SETUP['rate_limit']} requests per {SETUP['rate_window']:g} s window, "
        f"{5 * SETUP['records_per_resource'] + 2 * SETUP['accounts']} records, "
        f"{SETUP['accounts']} accounts; {SETUP['jobs']} jobs split them by user_ids",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="limits-") as tmp:
        rows = limits(options.python, Path(tmp), tuple(options.modes.split(",")))
    if options.json:
        options.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
