"""The soak run at its CI size: faults, a biting rate limit and changing data lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def test_soak_at_ci_size_is_complete(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SOAK),
            "--records",
            "7000",
            "--json",
            str(report_file),
            "--workdir",
            str(tmp_path / "work"),
            "--run-timeout",
            "50",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "result: COMPLETE" in done.stdout
    report = json.loads(report_file.read_text())
    assert report["complete"] is True, report["problems"]
    assert report["records_in_final_snapshot"] >= 6900
    for name in ("run1", "run2"):
        assert report[name]["returncode"] == 0
        assert report[name]["peak_rss_mib"] > 0
    assert report["run1"]["records"] >= 6900
    # The soak exercised what it claims to: faults, changes during run 1, and a follow-up run
    # that had something to bring (records changed during run 1 land after its window).
    assert sum(report["run1"]["sandbox"]["faults"].values()) > 0
    assert report["run1"]["sandbox"]["mutations"] > 0
    assert sum(s["missing_or_stale_after_run1_alone"] for s in report["streams"].values()) > 0
    assert all(s["missing"] == 0 and s["stale"] == 0 for s in report["streams"].values())
