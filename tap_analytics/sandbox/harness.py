"""What every harness that runs the tap against the sandbox shares: tests, benchmark, soak run.

The sandbox's stock keys and resource names, the tap's settings for a sandbox, and the tap's
`RUN_SUMMARY` line read back, so that no harness keeps a copy of its own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tap_analytics.sandbox.config import FULL_SCOPES, LIFETIME_SCOPE, SandboxConfig
from tap_analytics.sandbox.records import RESOURCES

# Read off the stock keys by their scopes, so that config.py stays the one place naming them.
_STOCK_KEYS = SandboxConfig().api_keys
#: The stock API key with every scope.
API_KEY = next(key for key, scopes in _STOCK_KEYS.items() if set(scopes) == set(FULL_SCOPES))
#: The stock API key without the lifetime insights scope (403 on user_lifetime_insights).
NO_LIFETIME_KEY = next(key for key, scopes in _STOCK_KEYS.items() if LIFETIME_SCOPE not in scopes)
#: The sandbox's resources, in the order the API reference lists them.
RESOURCE_NAMES = tuple(RESOURCES)
#: What starts the JSON line the tap logs on stderr at the end of a run (tap_analytics.stats).
RUN_SUMMARY = "RUN_SUMMARY "


def tap_script(python: str | Path = sys.executable) -> Path:
    """The `tap-analytics` console script installed next to an interpreter, as users run it."""
    return Path(python).with_name("tap-analytics")


def tap_settings(api_url: str, **settings: Any) -> dict[str, Any]:
    """The tap's settings pointing at a sandbox with the stock key, plus any others given."""
    return {"api_key": API_KEY, "api_url": api_url, **settings}


def run_summary(stderr_lines: Iterable[str]) -> dict[str, Any] | None:
    """The last `RUN_SUMMARY` among the tap's stderr lines, parsed; None if it logged none.

    Raises ValueError if that line is not JSON (a run cut off while writing it).
    """
    summary: dict[str, Any] | None = None
    for line in stderr_lines:
        _head, found, rest = line.partition(RUN_SUMMARY)
        if found:
            summary = json.loads(rest)
    return summary
