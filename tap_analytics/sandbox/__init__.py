"""A local, deterministic implementation of the Analytics API v1, for tests and benchmarks.

It serves synthetic data with every quirk of the reference, and can inject faults, rate limits,
latency and data changes between requests.
"""

from tap_analytics.sandbox.config import SandboxConfig
from tap_analytics.sandbox.server import SandboxServer

__all__ = ["SandboxConfig", "SandboxServer"]
