"""The sandbox API in its own process, as the contenders meet it, with its CPU time at hand."""

from __future__ import annotations

import functools
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from bench.machine import CLOCK_TICKS, REPO
from tap_analytics.sandbox import API_KEY, RESOURCE_NAMES


class Sandbox:
    """The sandbox API in its own process, with its CPU time and request counter at hand."""

    def __init__(
        self,
        python: Path,
        records: int,
        latency_ms: int,
        workdir: Path,
        name: str,
        switches: dict[str, Any] | None = None,
    ) -> None:
        """`switches`: more of the sandbox's switches (SandboxConfig fields, by name)."""
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
        for switch, value in (switches or {}).items():
            flag = "--" + switch.replace("_", "-")
            if value is True:
                argv.append(flag)
            else:
                argv += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
        self.proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            self.close()
            sys.exit(f"the sandbox did not start; see {self._stderr.name}")

    @functools.cached_property
    def expected(self) -> dict[str, int]:
        """Each resource's paging.total: what every contender must read of it.

        Asked on first use, so that a rate-limited sandbox counts nothing before the clients
        measured on it.
        """
        return {
            resource: int(self.get(f"/v1/{resource}?limit=1")["paging"]["total"])
            for resource in RESOURCE_NAMES
        }

    def get(self, path: str) -> Any:
        """An API or admin path's JSON, with the stock key."""
        request = urllib.request.Request(self.url + path, headers={"X-API-Key": API_KEY})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def requests_served(self) -> int:
        """API requests so far (the admin endpoints do not count)."""
        return int(self.stats()["requests"])

    def stats(self) -> dict[str, Any]:
        """The sandbox's counters (/_sandbox/stats): requests, 429s, the first request's time."""
        return dict(self.get("/_sandbox/stats"))

    def cpu_seconds(self) -> float:
        """user+sys CPU of the sandbox process (all its threads) so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def close(self) -> None:
        """Stop the sandbox (SIGTERM, then SIGKILL after 10 s)."""
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
