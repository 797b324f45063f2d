"""The soak's verdict: every record of the sandbox's final snapshot came out, up to date."""

from __future__ import annotations

import typing as t

from tap_analytics.timestamps import rfc3339

if t.TYPE_CHECKING:
    from soak.output import Output


def check(
    snapshot: dict[str, list[dict[str, t.Any]]], runs: list[Output], examples: int = 5
) -> dict[str, t.Any]:
    """Every snapshot record came out of some run, the last time with its latest updated_at.

    Also counts what the first run alone would have missed, to show that the check has teeth
    (records changed during run 1 land after its window and only run 2 can bring them).
    """
    streams: dict[str, t.Any] = {}
    for name in sorted(set(snapshot) | {n for run in runs for n in run.seen}):
        seen = [run.seen.get(name, {}) for run in reversed(runs)]  # the latest run first
        records = snapshot.get(name, [])
        missing: list[str] = []
        stale: list[dict[str, str]] = []
        first_only = 0
        for record in records:
            record_id = record["id"]
            expected = rfc3339(record["updated_at"])
            got = next((ids[record_id] for ids in seen if record_id in ids), None)
            if got is None:
                missing.append(record_id)
            elif got != expected:
                stale.append({"id": record_id, "emitted": got, "latest": expected})
            first_only += runs[0].seen.get(name, {}).get(record_id) != expected
        live = {record["id"] for record in records}
        emitted = set().union(*seen)
        streams[name] = {
            "in_snapshot": len(records),
            "emitted_ids": len(emitted),
            "missing": len(missing),
            "stale": len(stale),
            "missing_or_stale_after_run1_alone": first_only,
            "emitted_then_deleted": len(emitted - live),
            "missing_examples": missing[:examples],
            "stale_examples": stale[:examples],
        }
        del live, emitted
    return streams
