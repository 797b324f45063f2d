"""The SDK's standard tap tests, run against a sandbox started for this module."""

from __future__ import annotations

import atexit

from singer_sdk.testing import SuiteConfig, get_tap_test_class

from tap_analytics.sandbox import SandboxConfig, SandboxServer, tap_settings
from tap_analytics.tap import TapAnalytics

# The SDK builds its test class from a config known at import time, so the sandbox starts here.
_sandbox = SandboxServer(SandboxConfig(records_per_resource=40, seed=3)).start()
atexit.register(_sandbox.close)

TestTapAnalytics = get_tap_test_class(
    TapAnalytics,
    config=tap_settings(_sandbox.url, page_size=15),
    suite_config=SuiteConfig(max_records_limit=None),
)
