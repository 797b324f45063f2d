"""The tap's number settings from the environment through Meltano (`kind: string`).

Meltano 4.4.1 fails every run given a `kind: decimal` setting in the environment ("Object of
type Decimal is not JSON serializable"); as strings they reach the tap, which reads them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tap_analytics.tap import STREAM_NAMES as STREAMS

pytestmark = pytest.mark.meltano

duckdb = pytest.importorskip("duckdb")

#: As an Airflow task or a shell gives them: strings.
NUMBERS = {
    "TAP_ANALYTICS_RATE_LIMIT_SHARE": "0.5",
    "TAP_ANALYTICS_REQUEST_TIMEOUT": "12.5",
    "TAP_ANALYTICS_PROGRESS_INTERVAL": "0",
}


def test_number_settings_from_the_environment_reach_the_tap(
    meltano_project: Any, meltano_env: dict[str, str], start_sandbox: Any
) -> None:
    sandbox = start_sandbox(records_per_resource=150)
    env = {**meltano_env, "TAP_ANALYTICS_API_URL": sandbox.url, **NUMBERS}

    printed = meltano_project.run("config", "--unsafe", "print", "tap-analytics", env=env)
    config = json.loads(printed.stdout)
    assert config["rate_limit_share"] == "0.5"
    assert config["request_timeout"] == "12.5"
    assert config["progress_interval"] == "0"

    run = meltano_project.run("run", "tap-analytics", "target-duckdb-local", env=env)
    # progress_interval "0" logs every page (two a stream); the default 10 s logs none here.
    for stream in STREAMS:
        progress = [line for line in run.stderr.splitlines() if f"Progress {stream}:" in line]
        assert len(progress) >= 2, stream
    with duckdb.connect(env["TARGET_DUCKDB_LOCAL_PATH"], read_only=True) as con:
        for stream in STREAMS:
            (count,) = con.execute(f'SELECT count(*) FROM "{stream}"').fetchone()  # noqa: S608
            assert count == 150, stream


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("rate_limit_share", "1.5", "1.5 is greater than the maximum of 1"),
        ("request_timeout", "0", "0.0 is less than or equal to the minimum of 0"),
        ("progress_interval", "ten", "'ten' is not a number; write it like 0.5 or 30"),
    ],
)
def test_a_wrong_number_from_the_environment_is_refused_in_one_line(
    meltano_project: Any, meltano_env: dict[str, str], setting: str, value: str, error: str
) -> None:
    # The tap stops before its first request: the URL is never reached.
    env = {**meltano_env, "TAP_ANALYTICS_API_URL": "http://127.0.0.1:9"}
    env[f"TAP_ANALYTICS_{setting.upper()}"] = value
    run = meltano_project.run("run", "tap-analytics", "target-duckdb-local", env=env, check=False)
    assert run.returncode == 1
    output = run.stdout + run.stderr
    # The tap's one line, which Meltano logs and then quotes in its own error: one message.
    messages = {
        line.partition(f"{setting}: ")[2] for line in output.splitlines() if setting in line
    }
    assert messages == {error}, output
    assert "Decimal" not in output
    assert "Traceback" not in output
