"""Every failure the API reference warns about, against the sandbox's switches."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import pytest
import requests
from taprun import STREAMS, TapRun, ids, run_tap, tap_config

from tap_analytics.errors import APIRequestError

if t.TYPE_CHECKING:
    from tap_analytics.sandbox import SandboxServer

SECRET = "sk-live-7Hq2+Zx/9"  # characters that URL encoding changes


def assert_complete(run: TapRun, server: SandboxServer) -> None:
    assert run.returncode == 0, run.stderr
    snapshot = server.snapshot()
    for stream in STREAMS:
        assert ids(run.records(stream)) == ids(snapshot[stream]), stream


def error_lines(run: TapRun) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("tap-analytics: error:")]


def summary(run: TapRun) -> dict[str, t.Any]:
    line = next(line for line in run.stderr.splitlines() if "RUN_SUMMARY" in line)
    return json.loads(line.split("RUN_SUMMARY ", 1)[1])


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "504", "reset", "truncated", "stall"])
def test_transient_failures_are_retried_until_every_record_is_read(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path, kind: str
) -> None:
    server = start_sandbox(
        records_per_resource=120, fault_rate=0.3, faults=(kind,), stall_seconds=3
    )
    run = run_tap(tap_config(server, request_timeout=1, max_retries=10), tmp_path)
    assert_complete(run, server)
    assert server.stats()["faults"][kind] > 0
    retried = sum(sum(stream["retries"].values()) for stream in summary(run)["streams"])
    assert retried >= server.stats()["faults"][kind]


def test_an_api_that_keeps_failing_ends_in_one_clear_line(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = start_sandbox(records_per_resource=20, fault_rate=1.0, faults=("503",))
    run = run_tap(tap_config(server, max_retries=2), tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "gave up after 3 attempts" in line
    assert "HTTP 503" in line
    assert "max_retries" in line
    assert "Traceback" not in run.stderr


#: 15% faults of every kind that answers, and 15 requests allowed per 2 s.
FAULTY_AND_TIGHT: dict[str, t.Any] = {
    "records_per_resource": 300,
    "fault_rate": 0.15,
    "faults": ("429", "500", "502", "503", "504", "reset", "truncated"),
    "rate_limit": 15,
    "rate_window": 2,
}


def test_faults_and_a_tight_rate_limit_lose_nothing_and_respect_retry_after(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    server = start_sandbox(**FAULTY_AND_TIGHT)
    run = run_tap(tap_config(server, max_concurrency=1, max_retries=12), tmp_path)
    assert_complete(run, server)
    stats = server.stats()
    assert stats["responses"].get("429", 0) > 0
    assert stats["requests_in_retry_after_window"] == 0


def test_concurrent_workers_pace_on_the_rate_limit_headers(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """With eight workers and 10 requests a second allowed, the tap slows before a 429."""
    server = start_sandbox(records_per_resource=300, rate_limit=10, rate_window=1)
    run = run_tap(tap_config(server, max_concurrency=8), tmp_path)
    assert_complete(run, server)
    stats = server.stats()
    assert stats["rate_limited"] <= 2
    assert stats["requests_in_retry_after_window"] <= 8 * stats["rate_limited"]


def test_concurrent_workers_lose_nothing_under_faults_and_a_tight_rate_limit(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path
) -> None:
    """Only requests already in flight when a 429 arrives may land inside its window."""
    server = start_sandbox(**FAULTY_AND_TIGHT)
    run = run_tap(tap_config(server, max_retries=12), tmp_path)
    assert_complete(run, server)
    stats = server.stats()
    refusals = stats["rate_limited"] + stats["faults"].get("429", 0)
    assert stats["requests_in_retry_after_window"] <= 7 * refusals


def test_a_rejected_key_stops_the_run_with_one_line(sandbox: SandboxServer, tmp_path: Path) -> None:
    run = run_tap(tap_config(sandbox, api_key="revoked-key"), tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "HTTP 401 invalid_api_key" in line
    assert "api_key setting" in line
    assert "request_id" in line
    assert "Traceback" not in run.stderr
    assert not [m for m in run.messages if m["type"] == "RECORD"]


def test_a_key_without_the_lifetime_scope_still_reads_the_other_streams(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    run = run_tap(tap_config(sandbox, api_key="sandbox-key-no-lifetime"), tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "stream user_lifetime_insights: HTTP 403 insufficient_scope" in line
    assert "insights:lifetime" in line
    assert "deselect" in line
    snapshot = sandbox.snapshot()
    for stream in STREAMS[:-1]:
        assert ids(run.records(stream)) == ids(snapshot[stream]), stream
    assert "user_lifetime_insights" not in run.last_state["bookmarks"] or not run.records(
        "user_lifetime_insights"
    )


def test_a_wrong_base_url_says_to_check_api_url(sandbox: SandboxServer, tmp_path: Path) -> None:
    run = run_tap(tap_config(sandbox, api_url=f"{sandbox.url}/v2"), tmp_path)
    assert run.returncode == 1
    [line] = error_lines(run)
    assert "HTTP 404 not_found" in line
    assert "api_url" in line


def test_a_rejected_parameter_names_the_stream_code_and_request_id() -> None:
    response = requests.Response()
    response.status_code = 400
    response._content = (
        b'{"error":{"code":"invalid_parameter","message":"limit must be 1..100",'
        b'"request_id":"req-42"}}'
    )
    error = APIRequestError.from_response("media", response)
    assert str(error).startswith(
        "stream media: HTTP 400 invalid_parameter: limit must be 1..100 (request_id req-42)."
    )
    assert "page_size" in str(error)


@pytest.mark.parametrize(
    "scenario",
    ["rejected key", "refused connection", "resets", "timeouts", "success"],
)
def test_the_key_never_appears_in_any_output(
    start_sandbox: t.Callable[..., SandboxServer], tmp_path: Path, scenario: str
) -> None:
    server = start_sandbox(
        records_per_resource=20,
        api_keys={SECRET: ("read", "insights:lifetime")},
        fault_rate={"resets": 1.0, "timeouts": 1.0}.get(scenario, 0.0),
        faults={"resets": ("reset",), "timeouts": ("stall",)}.get(scenario, ("500",)),
        stall_seconds=2,
    )
    config = tap_config(server, api_key=SECRET, max_retries=1, request_timeout=0.5)
    if scenario == "rejected key":
        server.configure(api_keys={"another-key": ("read",)})
    if scenario == "refused connection":
        config["api_url"] = "http://127.0.0.1:9"
    run = run_tap(config, tmp_path, env={"LOGLEVEL": "DEBUG"})
    assert (run.returncode == 0) == (scenario == "success"), run.stderr
    output = run.stdout + run.stderr
    for form in (SECRET, requests.utils.quote(SECRET, safe=""), "7Hq2"):
        assert form not in output, scenario
