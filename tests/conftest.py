"""Fixtures: sandbox API servers on 127.0.0.1, stopped after each test."""

from __future__ import annotations

import typing as t

import pytest

from tap_analytics.sandbox import SandboxConfig, SandboxServer


@pytest.fixture
def start_sandbox() -> t.Iterator[t.Callable[..., SandboxServer]]:
    """Start sandboxes with the given switches; all are stopped after the test."""
    started: list[SandboxServer] = []

    def start(**switches: t.Any) -> SandboxServer:
        server = SandboxServer(SandboxConfig(**switches))
        server.__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def sandbox(start_sandbox: t.Callable[..., SandboxServer]) -> SandboxServer:
    """A still sandbox with 150 records a resource: two pages each, ties included."""
    return start_sandbox(records_per_resource=150, seed=1)
