"""The machine the benchmark runs on: the contenders' interpreter, facts, load, quiet moments."""

from __future__ import annotations

import hashlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import log
from tap_analytics import timestamps
from tap_analytics.sandbox import tap_script

REPO = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


#: The contenders' venv: the tap as users install it, without the test and dev packages.
RUNTIME_VENV = REPO / ".venv-bench"


def venv_python(explicit: str | None) -> Path:
    """The interpreter the contenders run on: --python, else RUNTIME_VENV, made or refreshed.

    Not the development venv: its test packages (jsonschema's optional format checkers among
    them) add about 0.1 s to every start of any singer-sdk tap, which users do not pay.
    The working tree is installed as a wheel at every run, not editable: users run compiled
    modules, and an editable tap_analytics is compiled afresh at every start wherever
    PYTHONDONTWRITEBYTECODE is set (about 0.05 s).
    """
    if explicit:
        return Path(explicit)
    python = RUNTIME_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(RUNTIME_VENV)], check=True)
    log(f"installing the tap into {RUNTIME_VENV} (runtime dependencies only)")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
    )
    if install.returncode:
        sys.exit(f"pip install into {RUNTIME_VENV} failed:\n{install.stdout}{install.stderr}")
    return python


def tap_executable(python: Path) -> Path:
    """The tap's console script next to the contenders' interpreter, else the one on PATH."""
    script = tap_script(python)
    if script.exists():
        return script
    found = shutil.which("tap-analytics")
    if not found:
        sys.exit("tap-analytics is not installed next to the interpreter nor on PATH")
    return Path(found)


def machine_info(python: Path) -> dict[str, Any]:
    """The machine, the versions the contenders run on, and the tap's source and commit."""
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
        "date": timestamps.now().isoformat(timespec="seconds"),
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
    """CPU seconds this process has spent so far."""
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
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*.py")):
        digest.update(str(path.relative_to(source)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
