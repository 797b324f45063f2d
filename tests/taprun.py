"""Running the tap as a real process, as users do, and reading what it printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from tap_analytics.sandbox import run_summary, tap_script, tap_settings
from tap_analytics.tap import STREAM_NAMES

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer


#: The console script, as users run it.
TAP = str(tap_script())
STREAMS = STREAM_NAMES


@dataclass
class TapRun:
    """What one run of the tap printed, with its Singer messages parsed."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, t.Any]] = field(default_factory=list)

    @classmethod
    def from_output(cls, returncode: int, stdout: str, stderr: str) -> TapRun:
        messages = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        return cls(returncode, stdout, stderr, messages)

    def records(self, stream: str) -> list[dict[str, t.Any]]:
        return [
            message["record"]
            for message in self.messages
            if message["type"] == "RECORD" and message["stream"] == stream
        ]

    @property
    def states(self) -> list[dict[str, t.Any]]:
        return [m["value"] for m in self.messages if m["type"] == "STATE"]

    @property
    def last_state(self) -> dict[str, t.Any]:
        return self.states[-1]

    @property
    def error_lines(self) -> list[str]:
        """The one-line failure reports the tap printed on stderr (`tap-analytics: error: ...`)."""
        lines = self.stderr.splitlines()
        return [line for line in lines if line.startswith("tap-analytics: error:")]

    @property
    def summary(self) -> dict[str, t.Any]:
        """The RUN_SUMMARY the tap logged at the end of the run."""
        summary = run_summary(self.stderr.splitlines())
        assert summary is not None, f"no RUN_SUMMARY on stderr:\n{self.stderr}"
        return summary


def tap_command(config: dict[str, t.Any], tmp_path: Path, state: dict | None = None) -> list[str]:
    """The command line that runs the tap with this config (and state), written to files."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    command = [TAP, "--config", str(config_file)]
    if state is not None:
        state_file = tmp_path / "state.json"
        state_file.write_text(json.dumps(state))
        command += ["--state", str(state_file)]
    return command


def run_tap(
    config: dict[str, t.Any],
    tmp_path: Path,
    *args: str,
    state: dict | None = None,
    env: dict[str, str] | None = None,
) -> TapRun:
    """Run the tap to the end and parse what it printed."""
    done = subprocess.run(
        [*tap_command(config, tmp_path, state), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if "--discover" in args or "--about" in args:
        return TapRun(done.returncode, done.stdout, done.stderr)
    return TapRun.from_output(done.returncode, done.stdout, done.stderr)


def run_tap_until_killed(
    config: dict[str, t.Any],
    tmp_path: Path,
    kill_after: t.Callable[[bytes], bool],
    state: dict | None = None,
) -> TapRun:
    """Run the tap, show `kill_after` each line it prints, SIGKILL it once that says so.

    What it printed up to then is parsed, less a last line cut off by the kill. A run that
    `kill_after` never stops runs to its end.
    """
    command = tap_command(config, tmp_path, state)
    stderr_file = tmp_path / "stderr.log"
    with stderr_file.open("wb") as stderr:  # a file: a full pipe would block the tap
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    assert process.stdout is not None
    lines: list[bytes] = []
    for line in process.stdout:
        lines.append(line)
        if kill_after(line):
            os.kill(process.pid, signal.SIGKILL)
            break
    lines.extend(process.stdout.readlines())
    process.wait()
    stderr = stderr_file.read_text()
    complete = b"".join(lines).decode().splitlines(keepends=True)
    if complete and not complete[-1].endswith("\n"):
        complete.pop()
    return TapRun.from_output(process.returncode, "".join(complete), stderr)


def select_streams(config: dict[str, t.Any], tmp_path: Path, streams: t.Iterable[str]) -> Path:
    """A catalog file, from the tap's own discovery, that selects only `streams`."""
    selected = set(streams)
    catalog = json.loads(run_tap(config, tmp_path, "--discover").stdout)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if not item["breadcrumb"]:
                item["metadata"]["selected"] = entry["tap_stream_id"] in selected
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(catalog))
    return catalog_file


def tap_config(server: SandboxServer, **settings: t.Any) -> dict[str, t.Any]:
    """Settings pointing the tap at a sandbox."""
    return tap_settings(server.url, **settings)


def ids(records: t.Iterable[dict[str, t.Any]]) -> set[str]:
    return {record["id"] for record in records}


def merged(runs: t.Iterable[TapRun], stream: str) -> dict[str, dict[str, t.Any]]:
    """Records of several runs merged by id, the last one winning, as a target merges them."""
    result: dict[str, dict[str, t.Any]] = {}
    for run in runs:
        for record in run.records(stream):
            result[record["id"]] = record
    return result
