"""A local, deterministic implementation of the Analytics API v1, for tests and benchmarks.

It serves synthetic data with every quirk of the reference, and can inject faults, rate limits,
latency and data changes between requests.
"""

from tap_analytics.sandbox.config import FAULT_KINDS, SandboxConfig
from tap_analytics.sandbox.harness import (
    API_KEY,
    NO_LIFETIME_KEY,
    RESOURCE_NAMES,
    run_summary,
    tap_script,
    tap_settings,
)
from tap_analytics.sandbox.server import SandboxServer

__all__ = [
    "API_KEY",
    "FAULT_KINDS",
    "NO_LIFETIME_KEY",
    "RESOURCE_NAMES",
    "SandboxConfig",
    "SandboxServer",
    "run_summary",
    "tap_script",
    "tap_settings",
]
