"""Run one command to the end and measure that process alone: wall time, CPU time, peak RSS.

Shared by the benchmark and the soak run. The command is started by a small reaper (a fresh
interpreter) that waits for it with `os.wait4`. Linux carries the memory high-water mark of the
process that starts a child into the child (`ru_maxrss` survives fork and exec), so a command
started by the benchmark or the soak run, which hold sandboxes, outputs and id maps, could never
report less than their size; started by the reaper it inherits only the reaper's few MiB, which
the result reports as its floor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

#: The reaper. argv: result file, stderr file, the command; the command's stdout is the reaper's.
_REAPER = """
import json, os, resource, subprocess, sys, time
result, log, command = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "wb") as stderr:
    started = time.perf_counter()
    child = subprocess.Popen(command, stderr=stderr)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
with open("/proc/self/status") as status_file:
    hwm = next(int(line.split()[1]) for line in status_file if line.startswith("VmHWM:"))
own = resource.getrusage(resource.RUSAGE_SELF)
with open(result, "w") as file:
    json.dump({"returncode": os.waitstatus_to_exitcode(status), "wall_s": wall,
               "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "max_rss_kib": usage.ru_maxrss,
               "floor_kib": hwm, "reaper_rss_kib": own.ru_maxrss,
               "reaper_cpu_s": own.ru_utime + own.ru_stime}, file)
"""


@dataclass
class Measured:
    """How one command ran: its exit status and its own usage, from `os.wait4`."""

    returncode: int = -1
    #: From starting the command to its end, start-up (imports) included.
    wall_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    #: The command's peak RSS (ru_maxrss, KiB on Linux).
    max_rss_kib: int = 0
    #: The reaper's own peak RSS (VmHWM): max_rss_kib cannot read below it.
    floor_kib: int = 0
    #: The reaper's ru_maxrss (which includes what it inherited) and its CPU time.
    reaper_rss_kib: int = 0
    reaper_cpu_s: float = 0.0
    #: Killed after the timeout.
    timed_out: bool = False


def run_measured(
    command: Sequence[str],
    stderr: Path,
    *,
    stdout: IO[bytes] | None = None,
    read_stdout: Callable[[IO[bytes]], None] | None = None,
    timeout: float = 0,
    cwd: Path | None = None,
) -> Measured:
    """Run `command` to the end, its stderr into the file `stderr`, and measure it.

    Its stdout goes to `stdout` (default: discarded), or, with `read_stdout`, through a pipe
    that function consumes in this thread while the command runs. A command still running
    after `timeout` seconds (0: no limit) is killed with the reaper and marked `timed_out`.
    """
    stderr = stderr.resolve()
    result_file = stderr.with_suffix(".rusage.json")
    result_file.unlink(missing_ok=True)
    timed_out = threading.Event()
    with open(os.devnull, "wb") as devnull:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(result_file), str(stderr), *command],
            stdout=subprocess.PIPE if read_stdout else (stdout or devnull),
            bufsize=1 << 20,
            cwd=cwd,
            start_new_session=True,  # its own process group: the watchdog ends both with it
        )
        watchdog = threading.Timer(timeout, _kill, (process, timed_out)) if timeout else None
        if watchdog is not None:
            watchdog.start()
        try:
            if read_stdout is not None:
                assert process.stdout is not None
                read_stdout(process.stdout)
        finally:
            if process.stdout is not None:
                process.stdout.close()
            process.wait()
            if watchdog is not None:
                watchdog.cancel()
    if not result_file.exists():  # the reaper itself was killed (by the watchdog) or failed
        return Measured(
            returncode=process.returncode or -1,
            wall_s=time.perf_counter() - started,
            timed_out=timed_out.is_set(),
        )
    return Measured(**json.loads(result_file.read_text()), timed_out=timed_out.is_set())


def _kill(process: subprocess.Popen[bytes], timed_out: threading.Event) -> None:
    """End a run that overran its time: the reaper and the command, the group it leads."""
    timed_out.set()
    os.killpg(process.pid, signal.SIGKILL)
