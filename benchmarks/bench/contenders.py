"""The contenders: how each is run, how it reports its count, how its output is checked."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tap_analytics.sandbox import API_KEY, RESOURCE_NAMES, run_summary, tap_settings

HERE = Path(__file__).resolve().parents[1]


@dataclass
class Contender:
    """A program that reads every resource, and the form of its output."""

    name: str
    argv: list[str]
    #: "singer" output (RECORD messages) or "lines" (one record per line, no stream name).
    output: str


def contenders(
    python: Path, tap: Path, config: Path, template_config: Path, url: str
) -> list[Contender]:
    """The four contenders against the sandbox at `url`, with their config files."""
    bare = [str(python), str(HERE / "bare_client.py")]
    api = ["--api-key", API_KEY, "--resources", ",".join(RESOURCE_NAMES)]
    return [
        Contender("tap-analytics", [str(tap), "--config", str(config)], "singer"),
        Contender("bare-sequential", [*bare, "sequential", url, *api], "lines"),
        Contender("bare-concurrent", [*bare, "concurrent", url, *api, "--workers", "8"], "lines"),
        Contender(
            "sdk-template",
            [str(python), str(HERE / "sdk_template_tap.py"), "--config", str(template_config)],
            "singer",
        ),
    ]


def reported_sync_seconds(contender: str, stderr_text: str) -> float | None:
    """The seconds of the tap's sync as its RUN_SUMMARY counts them (others: None)."""
    if contender != "tap-analytics":
        return None
    summary = run_summary(stderr_text.splitlines())
    return None if summary is None else float(summary["seconds"])


def write_configs(workdir: Path, url: str) -> tuple[Path, Path]:
    """The config files of the tap (max_concurrency 8) and of the SDK template tap."""
    config = workdir / "config.json"
    config.write_text(json.dumps(tap_settings(url, max_concurrency=8)))
    template_config = workdir / "template-config.json"
    template_config.write_text(json.dumps(tap_settings(url)))
    return config, template_config


def reported_records(contender: str, stderr_text: str) -> int | None:
    """The record count a contender reports about itself on stderr, if it does."""
    if contender == "tap-analytics":
        summary = run_summary(stderr_text.splitlines())
        return None if summary is None else int(summary["records"])
    if contender.startswith("bare-"):
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


def count_output(path: Path, kind: str) -> tuple[Counter[str], dict[str, int]]:
    """Records and distinct ids per stream of an output file ("singer" or "lines" of records).

    Bare records ("lines") carry no stream name: they count under "*".
    """
    counts: Counter[str] = Counter()
    ids: dict[str, set[str]] = defaultdict(set)
    with path.open("rb") as output:
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
    return counts, {stream: len(seen) for stream, seen in ids.items()}


def verify_output(contender: Contender, path: Path, expected: dict[str, int]) -> dict[str, Any]:
    """Check the records a contender wrote: per stream (Singer output) or in all (lines).

    Raises RuntimeError naming what is missing or repeated, ValueError if a line is not JSON.
    """
    counts, ids = count_output(path, contender.output)
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
