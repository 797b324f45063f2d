"""The one timestamp module: every form the API, a user or the tap writes, on every Python."""

from __future__ import annotations

import glob
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tap_analytics import timestamps

INSTANT = datetime(2026, 11, 1, 8, 15, 30, tzinfo=timezone.utc)
FORMS = [
    "2026-11-01T08:15:30+0000",  # the API's
    "2026-11-01T08:15:30+00:00",  # the tap's (RFC 3339)
    "2026-11-01T08:15:30Z",  # a user's start_date
    "2026-11-01T09:15:30+0100",
    "2026-11-01T08:15:30",  # naive: UTC
]


@pytest.mark.parametrize("text", FORMS)
def test_every_form_parses_to_the_same_instant(text: str) -> None:
    assert timestamps.parse(text) == INSTANT
    assert timestamps.epoch(text) == INSTANT.timestamp()
    assert timestamps.api_form(text) == "2026-11-01T08:15:30+0000"


def test_the_api_form_drops_fractions_and_converts_to_utc() -> None:
    assert timestamps.api_form("2026-11-01T09:15:30.75+01:00") == "2026-11-01T08:15:30+0000"
    assert timestamps.api_form(INSTANT.replace(tzinfo=None)) == "2026-11-01T08:15:30+0000"


def test_rfc3339_rewrites_offsets_and_leaves_everything_else() -> None:
    assert timestamps.rfc3339("2026-11-01T08:15:30+0000") == "2026-11-01T08:15:30+00:00"
    assert timestamps.rfc3339("2026-11-01T08:15:30Z") == "2026-11-01T08:15:30+00:00"
    assert timestamps.rfc3339("2026-01-01T00:00:00.5-0130") == "2026-01-01T00:00:00.5-01:30"
    for unchanged in ("2026-11-01T08:15:30+00:00", "2026-11-01", None, 7, "x"):
        assert timestamps.rfc3339(unchanged) == unchanged


def test_a_malformed_instant_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Invalid isoformat"):
        timestamps.parse("yesterday")


def find_python_3_10() -> str | None:
    """A Python 3.10 interpreter: on PATH, or installed by pyenv beside the current one."""
    candidates = [shutil.which("python3.10"), *glob.glob(str(PYENV_310))]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", ""], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


PYENV_310 = Path.home() / ".pyenv" / "versions" / "3.10*" / "bin" / "python3.10"


def test_python_3_10_reads_every_form_without_the_sdks_patch() -> None:
    # datetime.fromisoformat reads neither `Z` nor `+0000` before 3.11: the module must.
    python310 = find_python_3_10()
    if python310 is None:
        pytest.skip("no python3.10 on this machine (the CI matrix runs the suite on 3.10)")
    package_root = Path(timestamps.__file__).parents[1]
    check = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('t', {timestamps.__file__!r})\n"
        "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t)\n"
        f"print(sorted({{t.epoch(f) for f in {FORMS!r}}}), sys.version_info[:2])\n"
    )
    done = subprocess.run(
        [python310, "-c", check], capture_output=True, text=True, check=True, cwd=package_root
    )
    assert done.stdout.strip() == f"[{INSTANT.timestamp()}] (3, 10)"
