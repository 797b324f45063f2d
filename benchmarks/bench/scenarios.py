"""The parts of a benchmark: the scenarios, the fixed cost, memory at two sizes; rounds in each."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import log
from bench.contenders import Contender, contenders, verify_output, write_configs
from bench.runs import Run, attempt, summarize
from bench.sandbox_process import Sandbox


@dataclass(frozen=True)
class Setup:
    """What every part runs with: the contenders' interpreter, the tap, a work root, rounds."""

    python: Path
    tap: Path
    root: Path
    rounds: int


@contextlib.contextmanager
def _sandboxed(
    setup: Setup,
    name: str,
    records: int,
    latency_ms: int,
    switches: dict[str, Any] | None = None,
    only: tuple[str, ...] | None = None,
) -> Iterator[tuple[Path, Sandbox, list[Contender]]]:
    """A work directory `name`, a sandbox of its own, and the contenders pointed at it.

    `switches`: more sandbox switches; `only`: these contenders, not all four.
    """
    workdir = setup.root / name
    workdir.mkdir()
    with Sandbox(setup.python, records, latency_ms, workdir, name, switches) as sandbox:
        config, template_config = write_configs(workdir, sandbox.url)
        entries = contenders(setup.python, setup.tap, config, template_config, sandbox.url)
        yield workdir, sandbox, [c for c in entries if only is None or c.name in only]


def scenario(
    setup: Setup,
    name: str,
    title: str,
    records: int,
    latency_ms: int,
    switches: dict[str, Any] | None = None,
    only: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A verification pass (outputs counted), then the timed rounds, against one sandbox."""
    log(f"\n== scenario {name}: {title} ({records:,} records/resource, latency {latency_ms} ms) ==")
    with _sandboxed(setup, name, records, latency_ms, switches, only) as (
        workdir,
        sandbox,
        entries,
    ):
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
            except (RuntimeError, ValueError) as exc:
                failures[contender.name] = verification[contender.name] = str(exc)
                log(f"  FAILED {contender.name}: {exc}")
                continue
            finally:
                out_path.unlink(missing_ok=True)
            verification[contender.name] = {**checked, "warmup_wall_s": run.wall_s}
            log(f"  verify {contender.name:<16} {total:,} records ok  ({run.wall_s:.2f} s)")
        runs = run_rounds(entries, setup.rounds, sandbox, workdir, failures, with_load=True)
    return {
        "name": name,
        "title": title,
        "records_per_resource": records,
        "latency_ms": latency_ms,
        "switches": switches or {},
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


def fixed_cost(setup: Setup) -> dict[str, Any]:
    """Each contender against 7 x 1 record: start-up, imports, discovery, first requests."""
    log("\n== fixed cost: every contender against 7 x 1 record, latency 0 ==")
    with _sandboxed(setup, "fixed", 1, 0) as (workdir, sandbox, entries):
        failures: dict[str, str] = {}
        runs = run_rounds(entries, setup.rounds, sandbox, workdir, failures, with_load=False)
        total = sum(sandbox.expected.values())
    return {c.name: summarize(runs[c.name], total, failures.get(c.name)) for c in entries}


def memory_flatness(setup: Setup, small: int, large: int, accounts: int) -> dict[str, Any]:
    """The tap alone at two data sizes, its peak RSS at each.

    `accounts`: the sandbox's accounts (0: one per record, so the accounts grow with the data
    and so does the coverage the tap keeps per account).
    """
    owners = f"{accounts:,} accounts" if accounts else "one account per record"
    log(
        f"\n== memory: tap-analytics peak RSS at 7 x {small:,} and 7 x {large:,} records, "
        f"{owners} =="
    )
    sizes = {}
    rounds = setup.rounds
    for records in (small, large):
        name = f"memory-{records}-{accounts or 'each'}"
        with _sandboxed(setup, name, records, 0, {"accounts": accounts}, ("tap-analytics",)) as (
            workdir,
            sandbox,
            (tap_contender,),
        ):
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
            sizes[str(records)] = {
                **summarize(runs, sum(sandbox.expected.values()), failure),
                "accounts": sandbox.expected["users"],
            }
    ok = all("failed" not in sizes[str(size)] for size in (small, large))
    ratio = sizes[str(large)]["max_rss_mb"] / sizes[str(small)]["max_rss_mb"] if ok else None
    return {
        "small": small,
        "large": large,
        "accounts": accounts,
        "data_ratio": large / small,
        "sizes": sizes,
        "rss_ratio": ratio,
    }
