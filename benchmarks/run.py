"""Performance benchmark of tap-analytics: `python benchmarks/run.py [--quick] [--json PATH]`.

Against the sandbox API (one server process per scenario), it runs four contenders as separate
processes, each reading all seven resources completely with pages of 100:

- `tap-analytics`    the real console script, default settings, max_concurrency 8
- `bare-sequential`  requests + json, one request at a time (benchmarks/bare_client.py)
- `bare-concurrent`  the same with 8 requests in flight (benchmarks/bare_client.py)
- `sdk-template`     a plain singer-sdk tap as the cookiecutter suggests
                     (benchmarks/sdk_template_tap.py)

Scenario A has no latency and more data (throughput); scenario B adds 50 ms to every response
(latency hiding). Each scenario starts with an untimed verification pass (every contender once,
stdout to a file, records counted per stream against the sandbox's totals), then runs
interleaved rounds, each running every contender once in a rotating order; medians are
reported. A last part runs the tap alone at two data sizes 16x apart and compares peak RSS.

Wall time includes each process's start-up (imports). CPU time and peak RSS come from
`os.wait4` on the child. The sandbox's own CPU during each run is read from /proc.
Only the Python standard library is used here; the contenders run on a venv of their own
(.venv-bench: the tap installed as users install it, runtime dependencies only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
API_KEY = "sandbox-key"
RESOURCES = (
    "users",
    "media",
    "stories",
    "media_insights",
    "story_insights",
    "user_insights",
    "user_lifetime_insights",
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

FULL = {
    "rounds": 3,
    "a_records": 20_000,
    "b_records": 2_000,
    "b_latency_ms": 50,
    "memory_small": 2_500,
    "memory_large": 40_000,
}
QUICK = {
    "rounds": 1,
    "a_records": 2_500,
    "b_records": 300,
    "b_latency_ms": 50,
    "memory_small": 500,
    "memory_large": 8_000,
}


# --- environment ----------------------------------------------------------------------------


#: The contenders' venv: the tap as users install it, without the test and dev packages.
RUNTIME_VENV = REPO / ".venv-bench"


def venv_python(explicit: str | None) -> Path:
    """The interpreter the contenders run on: --python, else RUNTIME_VENV, made or refreshed.

    Not the development venv: its test packages (jsonschema's optional format checkers among
    them) add about 0.1 s to every start of any singer-sdk tap, which users do not pay.
    The install is editable, so the contenders run the working tree.
    """
    if explicit:
        return Path(explicit)
    python = RUNTIME_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RUNTIME_VENV)], check=True)
    log(f"installing the tap into {RUNTIME_VENV} (runtime dependencies only)")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", str(REPO)],
        capture_output=True,
        text=True,
    )
    if install.returncode:
        sys.exit(f"pip install into {RUNTIME_VENV} failed:\n{install.stdout}{install.stderr}")
    return python


def tap_executable(python: Path) -> Path:
    script = python.parent / "tap-analytics"
    if script.exists():
        return script
    found = shutil.which("tap-analytics")
    if not found:
        sys.exit("tap-analytics is not installed next to the interpreter nor on PATH")
    return Path(found)


def machine_info(python: Path) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    probe = (
        "import sys, importlib.metadata as m; "
        "print(sys.version.split()[0]); print(m.version('singer-sdk')); "
        "print(m.version('requests')); print(m.version('msgspec'))"
    )
    versions = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "python": versions[0],
        "singer_sdk": versions[1],
        "requests": versions[2],
        "msgspec": versions[3],
        "git_commit": commit + ("+dirty" if dirty else ""),
        "tap_source": str(tap_source(python)),
        "source_digest_start": code_fingerprint(tap_source(python)),
        "loadavg_start": os.getloadavg(),
    }


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds spent busy on all CPUs since boot, and of that, stolen by the hypervisor."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS, steal / CLOCK_TICKS


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


#: Other work (other users' tests, builds) counts as noise above this many busy CPUs.
QUIET_CPUS = 0.25
QUIET_SAMPLE = 0.3  # seconds per sample of the machine's load


def wait_for_quiet(max_wait: float) -> float:
    """Wait (at most max_wait s) until the machine's busy CPUs fall under QUIET_CPUS.

    Returns the busy CPUs of the last sample. The benchmark shares the machine with
    whatever else runs on it; waiting for a quiet moment before each run removes most of the
    noise, and each run records how much foreign CPU ran alongside it anyway.
    """
    deadline = time.monotonic() + max_wait
    while True:
        before, _ = machine_busy_seconds()
        time.sleep(QUIET_SAMPLE)
        busy = (machine_busy_seconds()[0] - before) / QUIET_SAMPLE
        if busy < QUIET_CPUS or time.monotonic() >= deadline:
            return busy


def tap_source(python: Path) -> Path:
    """Where the contenders import tap_analytics from (PYTHONPATH can point elsewhere)."""
    found = subprocess.run(
        [str(python), "-c", "import tap_analytics; print(tap_analytics.__file__)"],
        cwd="/",  # as the contenders, which run in a scratch directory: not the repo's
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(found).parent


def code_fingerprint(source: Path) -> str:
    """A digest of the tap's source files, to notice edits made while the benchmark runs."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(source.rglob("*.py")):
        digest.update(str(path.relative_to(source)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# --- the sandbox ----------------------------------------------------------------------------


class Sandbox:
    """The sandbox API in its own process, with its CPU time and request counter at hand."""

    def __init__(
        self, python: Path, records: int, latency_ms: int, workdir: Path, name: str
    ) -> None:
        self.records = records
        self.latency_ms = latency_ms
        self._stderr = open(workdir / f"sandbox-{name}.err", "wb")  # noqa: SIM115
        argv = [
            str(python),
            "-m",
            "tap_analytics.sandbox",
            "--port",
            "0",
            "--records-per-resource",
            str(records),
            "--latency-ms",
            str(latency_ms),
            "--api-key",
            API_KEY,
        ]
        self.proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.close()
            sys.exit(f"the sandbox did not start; see {self._stderr.name}")
        self.expected = {resource: self._total(resource) for resource in RESOURCES}

    def _get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"X-API-Key": API_KEY})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def _total(self, resource: str) -> int:
        return int(self._get(f"/v1/{resource}?limit=1")["paging"]["total"])

    def requests_served(self) -> int:
        """API requests so far (the admin endpoints do not count)."""
        return int(self._get("/_sandbox/stats")["requests"])

    def cpu_seconds(self) -> float:
        """user+sys CPU of the sandbox process (all its threads) so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

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


# --- contenders -----------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    argv: list[str]
    #: "singer" output (RECORD messages) or "lines" (one record per line, no stream name).
    output: str


def contenders(python: Path, tap: Path, config: Path, template_config: Path, url: str) -> list:
    bare = [str(python), str(HERE / "bare_client.py")]
    return [
        Contender("tap-analytics", [str(tap), "--config", str(config)], "singer"),
        Contender("bare-sequential", [*bare, "sequential", url], "lines"),
        Contender("bare-concurrent", [*bare, "concurrent", url, "--workers", "8"], "lines"),
        Contender(
            "sdk-template",
            [str(python), str(HERE / "sdk_template_tap.py"), "--config", str(template_config)],
            "singer",
        ),
    ]


@dataclass
class Run:
    contender: str
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    sandbox_cpu_s: float
    requests: int
    reported_records: int | None
    #: Busy CPU seconds of everything else on the machine during the run (noise), and steal.
    foreign_cpu_s: float = 0.0
    steal_s: float = 0.0
    busy_cpus_before: float = 0.0
    #: A child's ru_maxrss cannot read below its parent's peak RSS (Linux keeps the high-water
    #: mark across fork and exec): this process's peak at the time, the floor of max_rss_mb.
    rss_floor_mb: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def reported_records(contender: str, stderr_text: str) -> int | None:
    """The record count a contender reports about itself on stderr, if it does."""
    if contender == "tap-analytics":
        for line in stderr_text.splitlines():
            if "RUN_SUMMARY " in line:
                return int(json.loads(line.split("RUN_SUMMARY ", 1)[1])["records"])
    elif contender.startswith("bare-"):
        for line in stderr_text.splitlines():
            if line.startswith("records="):
                return int(line.removeprefix("records="))
    else:  # the SDK's metrics: one record_count point per stream (and interval)
        total, seen = 0, False
        for line in stderr_text.splitlines():
            if "METRIC: " in line and '"record_count"' in line:
                point = json.loads(line.split("METRIC: ", 1)[1])
                total += int(point["value"])
                seen = True
        return total if seen else None
    return None


#: Seconds to wait for a quiet machine before each run (--quiet-wait), and seconds after which
#: a contender is killed as hung (--timeout).
OPTIONS = {"quiet_wait": 20.0, "timeout": 300.0}


def run_once(
    contender: Contender, sandbox: Sandbox, workdir: Path, stdout_path: Path | None
) -> Run:
    """Run one contender to completion; measure wall, CPU and peak RSS of the child."""
    stderr_path = workdir / f"{contender.name}.err"
    quiet_wait = OPTIONS["quiet_wait"]
    busy_cpus_before = wait_for_quiet(quiet_wait) if quiet_wait > 0 else 0.0
    requests_before = sandbox.requests_served()
    sandbox_cpu_before = sandbox.cpu_seconds()
    machine_before, steal_before = machine_busy_seconds()
    self_before = self_cpu_seconds()
    rss_floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = open(stdout_path, "wb") if stdout_path else open(os.devnull, "wb")  # noqa: SIM115
    with out, open(stderr_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(contender.argv, stdout=out, stderr=err, cwd=workdir)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        watchdog = threading.Timer(OPTIONS["timeout"], kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - started
    if timed_out.is_set():
        raise RuntimeError(
            f"{contender.name} killed after {OPTIONS['timeout']:.0f} s without finishing (hung?)"
        )
    machine_after, steal_after = machine_busy_seconds()
    self_cpu = self_cpu_seconds() - self_before
    proc.returncode = os.waitstatus_to_exitcode(status)
    sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu_before
    requests = sandbox.requests_served() - requests_before
    stderr_text = stderr_path.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(stderr_text.splitlines()[-15:])
        raise RuntimeError(f"{contender.name} exited with {proc.returncode}:\n{tail}")
    run = Run(
        contender.name,
        wall,
        usage.ru_utime,
        usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
        sandbox_cpu,
        requests,
        reported_records(contender.name, stderr_text),
        foreign_cpu_s=max(
            0.0,
            machine_after
            - machine_before
            - usage.ru_utime
            - usage.ru_stime
            - sandbox_cpu
            - self_cpu,
        ),
        steal_s=steal_after - steal_before,
        busy_cpus_before=busy_cpus_before,
        rss_floor_mb=rss_floor,
    )
    expected = sum(sandbox.expected.values())
    if run.reported_records is not None and run.reported_records != expected:
        raise RuntimeError(
            f"{contender.name} reports {run.reported_records} records, the sandbox has {expected}"
        )
    return run


def count_output(path: str, kind: str) -> dict[str, list[int]]:
    """Stream -> [records, distinct ids] of an output file ("singer" or "lines" of records)."""
    counts: Counter[str] = Counter()
    ids: dict[str, set[str]] = defaultdict(set)
    with open(path, "rb") as output:
        for line in output:
            message = json.loads(line)
            if kind == "singer":
                if message.get("type") != "RECORD":
                    continue
                stream, record = message["stream"], message["record"]
            else:
                stream, record = "*", message
            counts[stream] += 1
            ids[stream].add(record["id"])
    return {stream: [counts[stream], len(ids[stream])] for stream in counts}


def verify_output(contender: Contender, path: Path, expected: dict[str, int]) -> dict[str, Any]:
    """Count the records a contender wrote: per stream (Singer output) or in all (lines).

    The counting runs in a child process: a child's peak RSS (ru_maxrss) can never read lower
    than the peak RSS of the process that forked it, so this process must stay small.
    """
    counted = subprocess.run(
        [sys.executable, __file__, "--count-output", str(path), contender.output],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(counted.stdout)
    counts = {stream: value[0] for stream, value in result.items()}
    ids = {stream: value[1] for stream, value in result.items()}
    problems = []
    if contender.output == "singer":
        for resource, total in expected.items():
            if counts.get(resource, 0) != total:
                problems.append(
                    f"{resource}: {counts.get(resource, 0)} records, sandbox has {total}"
                )
            elif ids[resource] != total:
                problems.append(f"{resource}: {total - ids[resource]} duplicate ids")
        problems += [f"unexpected stream {s}" for s in counts.keys() - expected.keys()]
    elif counts.get("*", 0) != sum(expected.values()):
        problems.append(f"{counts.get('*', 0)} records, sandbox has {sum(expected.values())}")
    if problems:
        raise RuntimeError(f"{contender.name} output is wrong: " + "; ".join(problems))
    return {"records": sum(counts.values()), "bytes": path.stat().st_size, "ok": True}


# --- scenarios ------------------------------------------------------------------------------


def write_configs(workdir: Path, url: str) -> tuple[Path, Path]:
    config = workdir / "config.json"
    config.write_text(json.dumps({"api_key": API_KEY, "api_url": url, "max_concurrency": 8}))
    template_config = workdir / "template-config.json"
    template_config.write_text(json.dumps({"api_key": API_KEY, "api_url": url}))
    return config, template_config


def median(values: list[float]) -> float:
    return statistics.median(values)


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
    if failure or not runs:
        return {
            "failed": failure or "no runs",
            "records": records,
            "runs": [asdict(r) for r in runs],
        }
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
        "foreign_cpu_s": median([r.foreign_cpu_s for r in runs]),
        "rss_floor_mb": max(r.rss_floor_mb for r in runs),
        "runs": [asdict(r) for r in runs],
    }


def log(message: str) -> None:
    print(message, flush=True)


def scenario(
    name: str,
    title: str,
    records: int,
    latency_ms: int,
    rounds: int,
    python: Path,
    tap: Path,
    root: Path,
) -> dict[str, Any]:
    workdir = root / name
    workdir.mkdir()
    log(f"\n== scenario {name}: {title} (7 x {records:,} records, latency {latency_ms} ms) ==")
    with Sandbox(python, records, latency_ms, workdir, name) as sandbox:
        config, template_config = write_configs(workdir, sandbox.url)
        entries = contenders(python, tap, config, template_config, sandbox.url)
        total = sum(sandbox.expected.values())
        verification: dict[str, Any] = {}
        failures: dict[str, str] = {}
        for contender in entries:
            out_path = workdir / f"{contender.name}.out"
            run = attempt(contender, sandbox, workdir, out_path)
            if isinstance(run, str):
                failures[contender.name] = verification[contender.name] = run
                continue
            try:
                checked = verify_output(contender, out_path, sandbox.expected)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                failures[contender.name] = verification[contender.name] = str(exc)
                log(f"  FAILED {contender.name}: {exc}")
                continue
            finally:
                out_path.unlink(missing_ok=True)
            verification[contender.name] = {**checked, "warmup_wall_s": run.wall_s}
            log(f"  verify {contender.name:<16} {total:,} records ok  ({run.wall_s:.2f} s)")
        runs = run_rounds(entries, rounds, sandbox, workdir, failures, with_load=True)
    return {
        "name": name,
        "title": title,
        "records_per_resource": records,
        "latency_ms": latency_ms,
        "records": total,
        "verification": verification,
        "contenders": {
            c.name: summarize(runs[c.name], total, failures.get(c.name)) for c in entries
        },
    }


def run_rounds(
    entries: list[Contender],
    rounds: int,
    sandbox: Sandbox,
    workdir: Path,
    failures: dict[str, str],
    *,
    with_load: bool,
) -> dict[str, list[Run]]:
    """Run every contender once a round, rotating who goes first; a failure drops it."""
    runs: dict[str, list[Run]] = {c.name: [] for c in entries}
    for number in range(rounds):
        order = entries[number % len(entries) :] + entries[: number % len(entries)]
        for contender in order:
            if contender.name in failures:
                continue
            run = attempt(contender, sandbox, workdir)
            if isinstance(run, str):
                failures[contender.name] = run
                continue
            runs[contender.name].append(run)
            load = (
                f"  sandbox cpu {run.sandbox_cpu_s:5.2f} s  other cpu {run.foreign_cpu_s:5.2f} s"
                if with_load
                else ""
            )
            log(
                f"  round {number + 1}/{rounds} {contender.name:<16} wall {run.wall_s:6.2f} s"
                f"  cpu {run.cpu_s:6.2f} s  rss {run.max_rss_mb:6.1f} MB{load}"
            )
    return runs


def fixed_cost(rounds: int, python: Path, tap: Path, root: Path) -> dict[str, Any]:
    """Each contender against 7 x 1 record: start-up, imports, discovery, first requests."""
    workdir = root / "fixed"
    workdir.mkdir()
    log("\n== fixed cost: every contender against 7 x 1 record, latency 0 ==")
    with Sandbox(python, 1, 0, workdir, "fixed") as sandbox:
        config, template_config = write_configs(workdir, sandbox.url)
        entries = contenders(python, tap, config, template_config, sandbox.url)
        failures: dict[str, str] = {}
        runs = run_rounds(entries, rounds, sandbox, workdir, failures, with_load=False)
        total = sum(sandbox.expected.values())
    return {c.name: summarize(runs[c.name], total, failures.get(c.name)) for c in entries}


def memory_flatness(
    small: int, large: int, rounds: int, python: Path, tap: Path, root: Path
) -> dict[str, Any]:
    log(f"\n== memory: tap-analytics peak RSS at 7 x {small:,} and 7 x {large:,} records ==")
    sizes = {}
    for records in (small, large):
        workdir = root / f"memory-{records}"
        workdir.mkdir()
        with Sandbox(python, records, 0, workdir, f"memory-{records}") as sandbox:
            config, template_config = write_configs(workdir, sandbox.url)
            tap_contender = contenders(python, tap, config, template_config, sandbox.url)[0]
            runs: list[Run] = []
            failure = None
            for number in range(rounds):
                run = attempt(tap_contender, sandbox, workdir)
                if isinstance(run, str):
                    failure = run
                    break
                runs.append(run)
                log(
                    f"  {records:>7,}/resource run {number + 1}/{rounds}: rss {run.max_rss_mb:.1f}"
                    f" MB, wall {run.wall_s:.2f} s"
                )
            sizes[str(records)] = summarize(runs, sum(sandbox.expected.values()), failure)
    ok = all("failed" not in sizes[str(size)] for size in (small, large))
    ratio = sizes[str(large)]["max_rss_mb"] / sizes[str(small)]["max_rss_mb"] if ok else None
    return {
        "small": small,
        "large": large,
        "data_ratio": large / small,
        "sizes": sizes,
        "rss_ratio": ratio,
    }


# --- report ---------------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    a = results["scenarios"]["A"]["contenders"]
    b = results["scenarios"]["B"]["contenders"]
    memory = results["memory"]

    def get(part: dict[str, Any], name: str, key: str) -> float | None:
        return part[name].get(key)  # absent when that contender failed

    rows = [
        (
            "A: tap records/s / bare-sequential records/s",
            _ratio(
                get(a, "tap-analytics", "records_per_s"), get(a, "bare-sequential", "records_per_s")
            ),
            ">= 0.8",
        ),
        (
            "A: same, each net of its fixed cost",
            _ratio(_net_rate(results, "tap-analytics"), _net_rate(results, "bare-sequential")),
            "(info)",
        ),
        (
            "B: tap wall / bare-concurrent wall",
            _ratio(get(b, "tap-analytics", "wall_s"), get(b, "bare-concurrent", "wall_s")),
            "<= 1.3",
        ),
        (
            "A: tap records/s / sdk-template records/s",
            _ratio(
                get(a, "tap-analytics", "records_per_s"), get(a, "sdk-template", "records_per_s")
            ),
            "> 1",
        ),
        (
            "B: tap records/s / sdk-template records/s",
            _ratio(
                get(b, "tap-analytics", "records_per_s"), get(b, "sdk-template", "records_per_s")
            ),
            "> 1",
        ),
        (
            "A: tap CPU / sdk-template CPU",
            _ratio(get(a, "tap-analytics", "cpu_s"), get(a, "sdk-template", "cpu_s")),
            "< 1",
        ),
        (
            "A: tap CPU / bare-sequential CPU",
            _ratio(get(a, "tap-analytics", "cpu_s"), get(a, "bare-sequential", "cpu_s")),
            "(info)",
        ),
        (
            f"memory: tap peak RSS at {memory['data_ratio']:.0f}x the data",
            memory["rss_ratio"],
            "<= 1.25",
        ),
    ]
    out = []
    for name, value, goal in rows:
        met = None
        if value is not None and goal != "(info)":
            operator, bound = goal.split()
            met = {
                ">=": value >= float(bound),
                "<=": value <= float(bound),
                ">": value > float(bound),
                "<": value < float(bound),
            }[operator]
        out.append({"name": name, "value": value, "goal": goal, "met": met})
    return out


def _net_rate(results: dict[str, Any], name: str) -> float | None:
    a = results["scenarios"]["A"]
    wall, fixed = a["contenders"][name].get("wall_s"), results["fixed_cost"][name].get("wall_s")
    if wall is None or fixed is None or wall <= fixed:
        return None
    return a["records"] / (wall - fixed)


def table(rows: list[list[str]], align: str) -> str:
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
            f"Scenario {scenario_result['name']} - {scenario_result['title']}: 7 x "
            f"{scenario_result['records_per_resource']:,} = {scenario_result['records']:,} "
            f"records, latency {scenario_result['latency_ms']} ms, page size 100"
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
                "other CPU s",
            ]
        ]
        for name, s in scenario_result["contenders"].items():
            if "failed" in s:
                rows.append([name, "FAILED", *[""] * 7])
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
                    f"{s['foreign_cpu_s']:.2f}",
                ]
            )
        out.append(table(rows, "lrrrrrrrr"))
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
        net_rate = _net_rate(results, name)
        net_cpu = net["cpu_s"] - s["cpu_s"] if "cpu_s" in net else None
        rows.append(
            [
                name,
                f"{s['wall_s']:.2f}",
                f"{s['cpu_s']:.2f}",
                _rss(s),
                "-" if net_rate is None else f"{net_rate:,.0f}",
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
        f"Peak RSS is the child's ru_maxrss; it cannot read below this process's own peak "
        f"({floor:.1f} MB), and values within 1 MB of it are starred."
    )
    out.append("=" * 100)
    return "\n".join(out)


def _failures(summaries: dict[str, dict[str, Any]]) -> list[str]:
    return [f"  {name} FAILED: {s['failed']}" for name, s in summaries.items() if "failed" in s]


def _rss(summary: dict[str, Any]) -> str:
    """Peak RSS, starred when it may only show the floor inherited from this process."""
    floored = summary["max_rss_mb"] <= summary["rss_floor_mb"] + 1
    return f"{summary['max_rss_mb']:.1f}" + ("*" if floored else "")


def _load(values: list[float] | tuple[float, ...]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def main() -> None:
    if sys.argv[1:2] == ["--count-output"]:  # internal: see verify_output
        print(json.dumps(count_output(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run (< 1 min)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("--python", help="interpreter of the contenders (default .venv-bench)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=OPTIONS["quiet_wait"],
        metavar="S",
        help=f"before each run, wait up to S s for other CPU load to fall under {QUIET_CPUS} "
        f"CPUs (default {OPTIONS['quiet_wait']:.0f}; 0: never wait)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=OPTIONS["timeout"],
        metavar="S",
        help=f"kill a contender still running after S s and report it as failed "
        f"(default {OPTIONS['timeout']:.0f})",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (configs, stderr logs)"
    )
    args = parser.parse_args()
    settings = dict(QUICK if args.quick else FULL)
    if args.rounds:
        settings["rounds"] = args.rounds
    python = venv_python(args.python)
    tap = tap_executable(python)
    OPTIONS["quiet_wait"] = args.quiet_wait
    OPTIONS["timeout"] = args.timeout
    started = time.perf_counter()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "settings": settings,
        "machine": machine_info(python),
        "commands": {},
    }
    log(f"contenders run on {python}; tap at {tap}")
    root = Path(tempfile.mkdtemp(prefix="tap-analytics-bench-"))
    try:
        results["scenarios"] = {
            "A": scenario(
                "A",
                "no latency",
                settings["a_records"],
                0,
                settings["rounds"],
                python,
                tap,
                root,
            ),
            "B": scenario(
                "B",
                f"{settings['b_latency_ms']} ms latency",
                settings["b_records"],
                settings["b_latency_ms"],
                settings["rounds"],
                python,
                tap,
                root,
            ),
        }
        results["fixed_cost"] = fixed_cost(settings["rounds"], python, tap, root)
        results["memory"] = memory_flatness(
            settings["memory_small"],
            settings["memory_large"],
            settings["rounds"],
            python,
            tap,
            root,
        )
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
