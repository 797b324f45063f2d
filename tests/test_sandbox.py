"""Tests of the sandbox API server, over real HTTP (requests) against SandboxServer."""

from __future__ import annotations

import gzip
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tap_analytics.sandbox import (
    API_KEY,
    FAULT_KINDS,
    NO_LIFETIME_KEY,
    RESOURCE_NAMES,
    SandboxConfig,
    SandboxServer,
)
from tap_analytics.sandbox.api import SandboxApi
from tap_analytics.sandbox.server import _HttpServer
from tap_analytics.timestamps import epoch

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """A read-only sandbox shared by the tests that change neither data nor switches."""
    with SandboxServer(SandboxConfig(records_per_resource=200, seed=1)) as server:
        yield server


@pytest.fixture
def fresh() -> Iterator[SandboxServer]:
    """A small sandbox of its own, for tests that mutate data or switches."""
    with SandboxServer(SandboxConfig(records_per_resource=40, seed=3)) as server:
        yield server


@pytest.fixture(scope="module")
def snapshot(sandbox: SandboxServer) -> dict[str, list[dict]]:
    return sandbox.snapshot()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(
    session: requests.Session,
    server: SandboxServer,
    path: str,
    key: str | None = API_KEY,
    **params: object,
) -> requests.Response:
    if key is not None:
        params["api_key"] = key
    return session.get(server.url + path, params=params, timeout=10)


def read_all(
    session: requests.Session, server: SandboxServer, resource: str, limit: int = 100, **params
) -> list[dict]:
    """Page with offset until the first short page."""
    records, offset = [], 0
    while True:
        page = get(session, server, f"/v1/{resource}", offset=offset, limit=limit, **params)
        assert page.status_code == 200, page.text
        data = page.json()["data"]
        records += data
        offset += limit
        if len(data) < limit:
            return records


def assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"]


# --- envelope, paging, ordering --------------------------------------------------------------


def test_envelope_and_paging_to_the_end(sandbox, snapshot, http):
    first = get(http, sandbox, "/v1/media", offset=0, limit=30)
    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"data", "paging"}
    assert body["paging"] == {"offset": 0, "limit": 30, "total": 200}
    records = read_all(http, sandbox, "media", limit=30)
    assert records == snapshot["media"]
    past = get(http, sandbox, "/v1/media", offset=500, limit=10)
    assert past.status_code == 200
    assert past.json() == {"data": [], "paging": {"offset": 500, "limit": 10, "total": 200}}


def test_default_limit_is_25(sandbox, http):
    body = get(http, sandbox, "/v1/stories").json()
    assert body["paging"] == {"offset": 0, "limit": 25, "total": 200}
    assert len(body["data"]) == 25


@pytest.mark.parametrize("resource", RESOURCE_NAMES)
def test_every_resource_is_ordered_by_updated_at_then_id(sandbox, snapshot, http, resource):
    records = read_all(http, sandbox, resource)
    assert records == snapshot[resource]
    assert len(records) == 200
    keys = [(epoch(record["updated_at"]), record["id"]) for record in records]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("name", "value"),
    [("limit", 101), ("limit", 0), ("limit", "ten"), ("offset", -1), ("offset", "1.5")],
)
def test_out_of_range_paging_is_400(sandbox, http, name, value):
    assert_error(get(http, sandbox, "/v1/media", **{name: value}), 400, "invalid_parameter")


def test_limit_100_is_allowed(sandbox, http):
    assert len(get(http, sandbox, "/v1/media", limit=100).json()["data"]) == 100


# --- filters ---------------------------------------------------------------------------------


def test_time_filters_are_inclusive_then_exclusive(sandbox, snapshot, http):
    media = snapshot["media"]
    ties = Counter(record["updated_at"] for record in media)
    instant = next(ts for ts, count in ties.items() if count > 1)  # a tie at the boundary
    at = epoch(instant)
    since = [r for r in media if epoch(r["updated_at"]) >= at]
    until = [r for r in media if epoch(r["updated_at"]) < at]
    for text in (instant, instant.replace("+0000", "Z"), instant.replace("+0000", "+00:00")):
        assert read_all(http, sandbox, "media", updated_since=text) == since
        assert read_all(http, sandbox, "media", updated_until=text) == until
    both = read_all(http, sandbox, "media", updated_since=instant, updated_until=instant)
    assert both == []


@pytest.mark.parametrize(
    "value",
    ["2025-03-01", "2025-03-01T00:00:00", "2025-03-01 00:00:00Z", "yesterday", "", "1740787200"],
)
def test_malformed_time_filter_is_400(sandbox, http, value):
    for name in ("updated_since", "updated_until"):
        assert_error(get(http, sandbox, "/v1/media", **{name: value}), 400, "invalid_parameter")


def test_user_id_filters_records_and_accounts(sandbox, snapshot, http):
    users = [record["id"] for record in snapshot["users"][:3]]
    media = read_all(http, sandbox, "media", user_id=",".join(users))
    assert media == [record for record in snapshot["media"] if record["user_id"] in users]
    assert media
    accounts = read_all(http, sandbox, "users", user_id=",".join(users))
    assert sorted(record["id"] for record in accounts) == sorted(users)
    assert read_all(http, sandbox, "media", user_id="12345678901234567") == []


def test_more_than_50_user_ids_is_400(sandbox, snapshot, http):
    ids = ",".join(record["id"] for record in snapshot["users"][:51])
    assert_error(get(http, sandbox, "/v1/media", user_id=ids), 400, "invalid_parameter")
    ids = ",".join(record["id"] for record in snapshot["users"][:50])
    assert get(http, sandbox, "/v1/media", user_id=ids).status_code == 200


# --- authentication, errors, headers -----------------------------------------------------------


def test_authentication_errors(sandbox, http):
    assert_error(get(http, sandbox, "/v1/media", key=None), 401, "missing_api_key")
    assert_error(get(http, sandbox, "/v1/media", key="nope"), 401, "invalid_api_key")


def test_header_key_wins_over_query_key(sandbox, http):
    url = sandbox.url + "/v1/media"
    ok = http.get(url, params={"api_key": "nope"}, headers={"X-API-Key": API_KEY}, timeout=10)
    assert ok.status_code == 200
    bad = http.get(url, params={"api_key": API_KEY}, headers={"X-API-Key": "nope"}, timeout=10)
    assert_error(bad, 401, "invalid_api_key")


def test_lifetime_insights_need_their_scope(sandbox, http):
    forbidden = get(http, sandbox, "/v1/user_lifetime_insights", key=NO_LIFETIME_KEY)
    assert_error(forbidden, 403, "insufficient_scope")
    assert get(http, sandbox, "/v1/media", key=NO_LIFETIME_KEY).status_code == 200
    assert get(http, sandbox, "/v1/user_lifetime_insights").status_code == 200


@pytest.mark.parametrize("path", ["/v1/nope", "/v2/media", "/media", "/v1/media/1", "/"])
def test_unknown_path_is_404(sandbox, http, path):
    assert_error(get(http, sandbox, path), 404, "not_found")


def test_rate_limit_headers_on_every_response(sandbox, http):
    for response in (
        get(http, sandbox, "/v1/media"),
        get(http, sandbox, "/v1/media", key=None),
        get(http, sandbox, "/v1/nope"),
        get(http, sandbox, "/v1/media", limit=101),
    ):
        assert response.headers["X-RateLimit-Limit"] == "600"
        assert int(response.headers["X-RateLimit-Remaining"]) >= 0
        assert int(response.headers["X-RateLimit-Reset"]) >= 0


def test_gzip_only_when_asked(sandbox, http):
    url = sandbox.url + "/v1/media"
    zipped = http.get(
        url, params={"api_key": API_KEY}, headers={"Accept-Encoding": "gzip"}, stream=True
    )
    raw = zipped.raw.read(decode_content=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert int(zipped.headers["Content-Length"]) == len(raw)
    assert json.loads(gzip.decompress(raw))["paging"]["total"] == 200
    plain = http.get(url, params={"api_key": API_KEY}, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert plain.json()["paging"]["total"] == 200


def test_fast_pages_serve_the_same_pages_and_follow_changes(fresh, http):
    def pages(encoding: str) -> list[bytes]:
        headers = {"Accept-Encoding": encoding}
        return [
            http.get(
                fresh.url + "/v1/media",
                params={"api_key": API_KEY, "offset": offset, "limit": 15},
                headers=headers,
                timeout=10,
            ).content
            for offset in (0, 14, 28)
        ]

    rendered = {encoding: pages(encoding) for encoding in ("gzip", "identity")}
    fresh.configure(fast_pages=True)
    for _ in range(2):  # first served, then from the kept bytes
        assert {encoding: pages(encoding) for encoding in rendered} == rendered
    fresh.mutate(updates=5, resources=["media"])
    fresh.configure(fast_pages=False)
    changed = pages("gzip")
    assert changed != rendered["gzip"]
    fresh.configure(fast_pages=True)
    assert pages("gzip") == changed
    assert pages("identity") == changed


def test_stalls_last_between_stall_seconds_and_the_max():
    api = SandboxApi(SandboxConfig(stall_seconds=2, stall_seconds_max=4))
    draws = [api._stall_seconds(api.config) for _ in range(50)]
    assert all(2 <= seconds <= 4 for seconds in draws)
    assert max(draws) - min(draws) > 1
    fixed = SandboxApi(SandboxConfig(stall_seconds=3))
    assert fixed._stall_seconds(fixed.config) == 3  # no max: exactly stall_seconds


def test_key_never_echoed(sandbox, http):
    for key in ("sandbox-secret-value", API_KEY):
        response = get(http, sandbox, "/v1/media", key=key, limit=500)
        assert key not in response.text


# --- rate limiting, faults, missing total --------------------------------------------------------


def test_rate_limit_and_retry_after_window(fresh, http):
    fresh.configure(rate_limit=3, rate_window=60)
    remaining = [get(http, fresh, "/v1/media").headers["X-RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    limited = get(http, fresh, "/v1/media")
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert get(http, fresh, "/v1/media").status_code == 429  # too early: inside the window
    assert get(http, fresh, "/v1/media", key=NO_LIFETIME_KEY).status_code == 200  # per key
    stats = fresh.stats()
    assert stats["rate_limited"] == 2
    assert stats["requests_in_retry_after_window"] == 1
    assert stats["responses"] == {"200": 4, "429": 2}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind(fresh, http, kind):
    fresh.configure(fault_rate=1.0, faults=(kind,), stall_seconds=0.5)
    url = fresh.url + "/v1/media"
    params = {"api_key": API_KEY, "limit": 100}
    if kind == "reset":
        with pytest.raises(requests.ConnectionError):
            http.get(url, params=params, timeout=5)
    elif kind == "stall":
        with pytest.raises(requests.Timeout):
            http.get(url, params=params, timeout=0.1)
    else:
        response = http.get(url, params=params, headers={"Accept-Encoding": "identity"}, timeout=5)
        if kind == "truncated":
            assert response.status_code == 200
            assert int(response.headers["Content-Length"]) == len(response.content)
            with pytest.raises(ValueError, match=r"."):
                json.loads(response.content)
        elif kind in ("502", "503", "504"):
            assert response.status_code == int(kind)
            assert response.headers["Content-Type"].startswith("text/html")
            assert "<html>" in response.text
        elif kind == "500":
            assert_error(response, 500, "internal_error")
        else:
            assert_error(response, 429, "rate_limited")
            assert response.headers["Retry-After"] == "1"
    assert fresh.stats()["faults"] == {kind: 1}


def test_fault_mix_is_deterministic_and_admin_is_never_faulted(http):
    def statuses() -> list[int]:
        config = SandboxConfig(records_per_resource=10, fault_rate=0.5, faults=("500", "503"))
        with SandboxServer(config) as server:
            codes = [get(http, server, "/v1/users").status_code for _ in range(30)]
            assert http.get(server.url + "/_sandbox/stats", timeout=5).status_code == 200
            assert server.stats()["requests"] == 30
            return codes

    first = statuses()
    assert set(first) == {200, 500, 503}
    assert statuses() == first


def test_missing_total(fresh, http):
    fresh.configure(missing_total=True)
    paging = get(http, fresh, "/v1/media").json()["paging"]
    assert paging == {"offset": 0, "limit": 25}
    fresh.configure(missing_total=False, missing_total_rate=1.0)
    assert "total" not in get(http, fresh, "/v1/media").json()["paging"]
    fresh.configure(missing_total_rate=0.0)
    assert get(http, fresh, "/v1/media").json()["paging"]["total"] == 40


def test_configure_rejects_bad_switches(fresh):
    with pytest.raises(ValueError, match="fault kinds"):
        fresh.configure(faults=("418",))
    with pytest.raises(ValueError, match="cannot change"):
        fresh.configure(seed=2)
    with pytest.raises(TypeError):
        fresh.configure(no_such_switch=1)


def test_latency_is_added_and_overlaps_between_clients(fresh):
    fresh.configure(latency_ms=200)

    def one_request(_: int) -> float:
        started = time.monotonic()
        with requests.Session() as session:
            assert get(session, fresh, "/v1/media").status_code == 200
        return time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        durations = list(pool.map(one_request, range(4)))
    assert min(durations) >= 0.2
    assert time.monotonic() - started < 0.6  # four sleeps of 0.2 s in parallel, not in a row


# --- changing data ------------------------------------------------------------------------------


def test_mutate_shifts_offsets(fresh, http):
    before = fresh.snapshot()["media"]
    first = get(http, fresh, "/v1/media", offset=0, limit=10).json()["data"]
    assert first == before[:10]
    fresh.mutate(updates=40)  # updated records move to the end: later ones shift down
    after = fresh.snapshot()["media"]
    assert len(after) == len(before)
    assert after != before
    moved = {record["id"] for record in before[:10]} - {record["id"] for record in after[:10]}
    assert moved
    second = get(http, fresh, "/v1/media", offset=10, limit=10).json()["data"]
    assert second == after[10:20] != before[10:20]
    now = int(time.time())
    changed = [record for record in after if record not in before]
    assert changed
    assert all(now - 5 <= epoch(record["updated_at"]) <= now for record in changed)


def test_updated_record_gets_new_values(fresh):
    before = {r["id"]: r for r in fresh.snapshot()["story_insights"]}
    fresh.mutate(updates=60)
    after = fresh.snapshot()["story_insights"]
    updated = [r for r in after if r["updated_at"] != before[r["id"]]["updated_at"]]
    assert updated
    for record in updated:
        old = before[record["id"]]
        fields = set(record) - {"updated_at"}
        assert any(record[name] != old.get(name) for name in fields)


def test_inserts_and_deletes(fresh):
    def size() -> int:
        return sum(len(records) for records in fresh.snapshot().values())

    start = size()
    fresh.mutate(inserts=5)
    assert start + 5 <= size() <= start + 10  # media, stories and users bring their insights
    grown = size()
    fresh.mutate(deletes=5)
    assert grown - 10 <= size() <= grown - 5
    snapshot = fresh.snapshot()
    for resource in RESOURCE_NAMES:
        ids = [record["id"] for record in snapshot[resource]]
        assert len(ids) == len(set(ids))
    assert {r["id"] for r in snapshot["media"]} == {r["id"] for r in snapshot["media_insights"]}
    assert {r["id"] for r in snapshot["users"]} == {
        r["id"] for r in snapshot["user_lifetime_insights"]
    }


def test_mutate_every_nth_list_request(fresh, http):
    fresh.configure(mutate_every=2, mutate_updates=3, mutate_inserts=0, mutate_deletes=0)
    for _ in range(5):
        get(http, fresh, "/v1/media")
    stats = fresh.stats()
    assert stats["list_requests"] == 5
    assert stats["mutations"] == 2


def test_a_request_stalled_across_stopping_the_changes_changes_nothing(fresh, http, monkeypatch):
    """configure(mutate_every=0) holds for requests already in progress (the soak relies on it)."""
    in_stall, release = threading.Event(), threading.Event()

    def stall_until_released(self: SandboxApi, config: SandboxConfig) -> float:
        in_stall.set()
        release.wait(10)
        return 0.0

    monkeypatch.setattr(SandboxApi, "_stall_seconds", stall_until_released)
    fresh.configure(
        mutate_every=1, mutate_updates=3, fault_rate=1.0, faults=("stall",), stall_seconds=1
    )
    before = fresh.snapshot()
    with ThreadPoolExecutor(1) as pool:
        stalled = pool.submit(get, http, fresh, "/v1/media")
        assert in_stall.wait(10)
        fresh.configure(mutate_every=0)
        release.set()
        assert stalled.result().status_code == 200
    assert fresh.stats()["mutations"] == 0
    assert fresh.snapshot() == before


def test_a_burst_of_new_connections_is_queued_not_dropped():
    """Connections the server has yet to accept wait in its listen queue.

    With socketserver's backlog of 5, the kernel drops a burst's SYNs: three jobs of 8
    workers starting together then see requests arrive a second late, on the retransmit.
    """
    server = _HttpServer(("127.0.0.1", 0), SandboxApi(SandboxConfig(records_per_resource=1)))
    clients: list[socket.socket] = []
    try:  # the server does not accept yet: every connection must fit in the queue
        for _ in range(3 * 2 * 8):
            clients.append(socket.create_connection(server.server_address[:2], timeout=5))
    finally:
        for client in clients:
            client.close()
        server.server_close()


def test_admin_endpoints(fresh, http):
    admin = fresh.url + "/_sandbox"
    assert http.get(admin + "/snapshot", timeout=10).json() == fresh.snapshot()
    assert http.post(admin + "/mutate", params={"updates": 2, "inserts": 1}, timeout=10).ok
    config = http.post(admin + "/configure", json={"faults": ["500"], "fault_rate": 1.0}).json()
    assert config["faults"] == ["500"]
    assert fresh.config.fault_rate == 1.0
    bad = http.post(admin + "/configure", json={"fault_rate": 7}, timeout=10)
    assert bad.status_code == 400
    assert get(http, fresh, "/v1/media").status_code == 500
    stats = http.get(admin + "/stats", timeout=10).json()
    assert stats["requests"] == 1
    assert stats["mutations"] == 1
    assert stats["faults"] == {"500": 1}
    assert http.get(admin + "/nothing", timeout=10).status_code == 404


# --- the data ---------------------------------------------------------------------------------


def walk(value: object) -> Iterator[object]:
    """Yield value and everything nested in it."""
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def test_quirks_are_all_present(snapshot):
    records = [record for resource in RESOURCE_NAMES for record in snapshot[resource]]
    timestamps = [
        value
        for resource in ("users", "media", "stories")
        for record in snapshot[resource]
        for name, value in record.items()
        if name in ("updated_at", "created_at", "timestamp", "expires_at")
    ]
    assert all(TIMESTAMP.fullmatch(value) for value in timestamps)
    plain_ids = [r["id"] for r in records if ":" not in r["id"]]
    assert all(i.isdigit() and 17 <= len(i) <= 20 for i in plain_ids)
    assert {17, 18, 19, 20} <= {len(i) for i in plain_ids}
    compound = [r["id"] for r in snapshot["user_insights"]]
    assert all(re.fullmatch(r"\d{17,20}:\d{4}-\d\d-\d\d", i) for i in compound)
    captions = [r.get("caption") for r in snapshot["media"]]
    assert any(c and any(ord(ch) >= 0x1F300 for ch in c) for c in captions)  # emoji
    assert any(c and "\n" in c for c in captions)
    assert any(c and '"' in c for c in captions)
    assert None in captions
    assert any("caption" not in r for r in snapshot["media"])  # absent, not null
    assert any(isinstance(v, int) and v > 2**31 for r in records for v in walk(r))
    assert any({"ig_new_metric", "ig_experiment"} & set(r) for r in records)
    assert any(isinstance(r.get("ig_experiment"), dict) for r in records)
    for resource in RESOURCE_NAMES:
        ties = Counter(record["updated_at"] for record in snapshot[resource])
        assert max(ties.values()) > 1


def test_fields_follow_the_reference(snapshot):
    media_types = {}
    for media in snapshot["media"]:
        kind = media_types[media["id"]] = media["media_type"]
        assert kind in ("IMAGE", "VIDEO", "CAROUSEL_ALBUM", "REEL")
        assert ("children" in media) <= (kind == "CAROUSEL_ALBUM")
        assert ("thumbnail_url" in media) <= (kind in ("VIDEO", "REEL"))
        assert media["permalink"].startswith("https://")
        children = media.get("children")
        assert children is None or all(c.isdigit() and 17 <= len(c) <= 20 for c in children)
    assert any(media.get("children") for media in snapshot["media"])
    for insight in snapshot["media_insights"]:
        kind = media_types[insight["id"]]
        assert ("plays" in insight) <= (kind == "REEL")
        assert ("video_views" in insight) <= (kind in ("VIDEO", "REEL"))
    assert {r["account_type"] for r in snapshot["users"]} == {"BUSINESS", "CREATOR", "PERSONAL"}
    assert {r["media_type"] for r in snapshot["stories"]} == {"IMAGE", "VIDEO"}
    user_ids = {r["id"] for r in snapshot["users"]}
    for resource in RESOURCE_NAMES[1:]:
        assert {r["user_id"] for r in snapshot[resource]} <= user_ids
    for lifetime in snapshot["user_lifetime_insights"]:
        assert lifetime["id"] == lifetime["user_id"]
        online = lifetime.get("online_followers")
        assert online is None or set(online) == {str(hour) for hour in range(24)}
        for breakdown in ("audience_city", "audience_country", "audience_gender_age"):
            values = lifetime.get(breakdown) or {}
            assert all(isinstance(k, str) and isinstance(v, int) for k, v in values.items())
    buckets = {
        k for r in snapshot["user_lifetime_insights"] for k in r.get("audience_gender_age") or {}
    }
    assert "F.18-24" in buckets
    dates = [r["date"] for r in snapshot["user_insights"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", d) for d in dates)
    now = time.time()
    assert all(epoch(r["updated_at"]) < now for rs in snapshot.values() for r in rs)


def test_same_seed_same_snapshot(snapshot):
    with SandboxServer(SandboxConfig(records_per_resource=200, seed=1)) as again:
        assert again.snapshot() == snapshot
    with SandboxServer(SandboxConfig(records_per_resource=200, seed=2)) as other:
        assert other.snapshot() != snapshot


def test_snapshot_is_a_copy(sandbox):
    first = sandbox.snapshot()
    first["media"][0]["caption"] = "changed"
    first["user_lifetime_insights"].clear()
    assert sandbox.snapshot()["media"][0].get("caption") != "changed"
    assert len(sandbox.snapshot()["user_lifetime_insights"]) == 200


# --- command line -------------------------------------------------------------------------------


def test_command_line_prints_url_and_stops_on_sigterm():
    command = [sys.executable, "-m", "tap_analytics.sandbox", "--port", "0"]
    command += ["--records-per-resource", "10", "--seed", "1", "--missing-total"]
    command += ["--api-key", "k1", "--api-key", "k2=read", "--faults", "500,502"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            url = process.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            users = requests.get(url + "/v1/users", params={"api_key": "k1"}, timeout=10)
            assert users.json()["paging"] == {"offset": 0, "limit": 25}
            lifetime = requests.get(
                url + "/v1/user_lifetime_insights", params={"api_key": "k2"}, timeout=10
            )
            assert lifetime.status_code == 403
            config = requests.post(url + "/_sandbox/configure", json={}, timeout=10).json()
            assert config["faults"] == ["500", "502"]
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
